package stream

// SubmitTask asks the submitters to create the vendor batch of an attempt
// already recorded in the job store (retry batches). Msg id "<key>:submit".
type SubmitTask struct {
	JobKey string `json:"job_key"`
	Key    string `json:"key"`
}

// PollTask is the lease of one active vendor batch: whichever poller holds
// the message polls the batch, then naks it with the next poll delay (or
// acks it once the batch is final). Msg id "<batch_id>:poll".
type PollTask struct {
	BatchID string `json:"batch_id"`
	// Provider is the batch's vendor ("" is OpenAI).
	Provider string `json:"provider,omitempty"`
	JobKey   string `json:"job_key"`
	Key      string `json:"key"`
	Attempt  int    `json:"attempt"`
}

// FinalTask hands an attempt that ended (vendor batch final, or never
// submitted) to the notifiers. Msg id "<batch_id>:final" or "<key>:final".
type FinalTask struct {
	JobKey  string `json:"job_key"`
	Key     string `json:"key,omitempty"`
	BatchID string `json:"batch_id,omitempty"`
}
