package webhook

// CloseDefaultIdle closes the shared default client's idle connections, so
// goleak sees no transport goroutines after a test.
func CloseDefaultIdle() { defaultClient.CloseIdleConnections() }
