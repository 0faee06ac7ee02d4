// Package dashboard is the operators' web UI: server-rendered pages over
// the job index, the job records, the presence bucket and the dead-letter
// stream, read-only unless actions are allowed.
//
// [New] returns an http.Handler; serve it with net/http (the batchfleet
// command listens on 127.0.0.1:8088). Pages:
//
//	GET  /                      overview: unfinished jobs by status, jobs finished in the
//	                            last 24h by outcome, jobs/s (jobs finished in the last
//	                            5 minutes / 300 s), cost and savings since 00:00 UTC,
//	                            active batches, DLQ size, live workers, newest unfinished jobs
//	GET  /jobs                  the job list: ?status=&outcome=&model=&since=&key_prefix=&limit=&offset=
//	                            (since: a duration back from now, 24h or 7d, or RFC 3339); 400 on a bad filter
//	GET  /jobs/{key}            one job: outcome, counts, usage, cost, timeline, attempts; 404 if unknown
//	GET  /jobs/{key}/results    the merged results, streamed as application/x-ndjson; 404 if none
//	POST /jobs/{key}/cancel     publish batch.cancel, then back to the job (actions only)
//	GET  /dlq                   the dead letters of batch.dlq.> (the newest 200)
//	POST /dlq/replay            deliver the dead-lettered webhooks again (actions only)
//	GET  /healthz               "ok"
//
// The Overview, Jobs and Job pages reload themselves every Options.Refresh
// (a meta refresh; 5s by default). Templates and the stylesheet are
// embedded: the pages load nothing from elsewhere, and a Content Security
// Policy says so.
//
// # Actions and security
//
// Without Options.AllowActions no button is rendered and the POST
// endpoints answer 403. With it, Options.User and Options.Password are
// required and every request but /healthz must carry them (HTTP basic
// auth, compared in constant time); POSTs are also refused when the
// browser marks them cross-origin (http.CrossOriginProtection: the
// Sec-Fetch-Site or Origin header), so another site cannot make an
// operator's browser cancel a job. Basic auth sends the password with
// every request: put the dashboard behind TLS, or keep it on localhost.
package dashboard
