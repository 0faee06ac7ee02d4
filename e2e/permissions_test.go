package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/contract"
)

// startAuthNATS starts an embedded JetStream server configured with
// deploy/nats/auth.conf (its passwords from the environment) and returns
// a URL for each of its users.
func startAuthNATS(t *testing.T) func(user string) string {
	t.Helper()
	dir := t.TempDir()
	auth, err := os.ReadFile("../deploy/nats/auth.conf")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "auth.conf"), auth, 0o600))
	conf := fmt.Sprintf("listen: \"127.0.0.1:-1\"\njetstream { store_dir: %q }\ninclude \"auth.conf\"\n", filepath.Join(dir, "js"))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "server.conf"), []byte(conf), 0o600))
	users := []string{"submitter", "poller", "notifier", "producer", "consumer", "operator"}
	for _, u := range users {
		t.Setenv("BATCHFLEET_"+strings.ToUpper(u)+"_PASSWORD", "pw-"+u+"-s3cret")
	}
	opts, err := server.ProcessConfigFile(filepath.Join(dir, "server.conf"))
	require.NoError(t, err, "deploy/nats/auth.conf must parse")
	// PERM_DEBUG=1 logs the server (every permissions violation) to stderr.
	opts.NoLog, opts.NoSigs = os.Getenv("PERM_DEBUG") == "", true
	s, err := server.NewServer(opts)
	require.NoError(t, err)
	if !opts.NoLog {
		s.ConfigureLogger()
	}
	go s.Start()
	require.True(t, s.ReadyForConnections(10*time.Second))
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	base, err := url.Parse(s.ClientURL())
	require.NoError(t, err)
	return func(user string) string {
		u := *base
		u.User = url.UserPassword(user, "pw-"+user+"-s3cret")
		return u.String()
	}
}

// The whole fleet runs under the least-privilege users of
// deploy/nats/auth.conf (a job with a retry, a cancel and a dead-lettered
// request: every path's subjects), and what a user is not given is
// denied: a submitter cannot publish batch.completed, a producer cannot
// read job records.
func TestLeastPrivilegeUsers(t *testing.T) {
	t0 := time.Now()
	natsURL := startAuthNATS(t)
	f := startFleet(t, fleetOpts{NATSURL: natsURL("operator"), WorkerEnv: []string{"RETRY_BACKOFF=100ms", "MAX_RETRY_ATTEMPTS=1"}})
	for _, kind := range []string{"submitter", "poller", "notifier"} {
		f.start(kind, 1, "NATS_URL="+natsURL(kind))
	}
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	t.Logf("fleet running after %s", time.Since(t0).Round(time.Millisecond))

	// A producer's own connection publishes the jobs.
	pnc, err := nats.Connect(natsURL("producer"))
	require.NoError(t, err)
	defer pnc.Close()
	publish := func(req contract.Request) {
		t.Helper()
		data, err := json.Marshal(req)
		require.NoError(t, err)
		pjs, err := pnc.JetStream()
		require.NoError(t, err)
		_, err = pjs.Publish(contract.SubjectRequests, data, nats.MsgId(req.IdempotencyKey))
		require.NoError(t, err)
	}
	publish(contract.Request{IdempotencyKey: "perm-ok", Requests: chatRequests("perm-ok", 3)})
	publish(contract.Request{IdempotencyKey: "perm-retry", Requests: items("perm-retry", 2, "fail-once", 1)})
	publish(contract.Request{IdempotencyKey: "perm-cancel", Requests: items("perm-cancel", 1, "never-finish", 1)})
	publish(contract.Request{IdempotencyKey: "perm-bad", Endpoint: "/v1/nope", Requests: chatRequests("perm-bad", 1)})

	require.Eventually(t, func() bool {
		p, err := jobsActive(f)
		return err == nil && p
	}, 30*time.Second, 100*time.Millisecond, "perm-cancel running")
	t.Logf("perm-cancel active after %s", time.Since(t0).Round(time.Millisecond))
	require.NoError(t, pnc.Publish(contract.SubjectCancel, []byte(`{"idempotency_key":"perm-cancel"}`)))

	got, _ := f.readOneEach(completed, []string{"perm-ok", "perm-retry", "perm-cancel", "perm-bad"}, 90*time.Second)
	t.Logf("every job completed after %s", time.Since(t0).Round(time.Millisecond))
	require.Equal(t, contract.OutcomeSucceeded, got["perm-ok"].Outcome)
	require.Equal(t, contract.OutcomeSucceeded, got["perm-retry"].Outcome)
	require.Len(t, got["perm-retry"].BatchIDs, 2, "a retry batch")
	require.Equal(t, contract.OutcomeCancelled, got["perm-cancel"].Outcome)
	require.Equal(t, contract.OutcomeFailed, got["perm-bad"].Outcome)

	// What a user is not given is denied.
	denied := func(user, subject string) {
		t.Helper()
		errc := make(chan error, 1)
		nc, err := nats.Connect(natsURL(user), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case errc <- err:
			default:
			}
		}))
		require.NoError(t, err)
		defer nc.Close()
		require.NoError(t, nc.Publish(subject, []byte(`{"idempotency_key":"forged"}`)))
		require.NoError(t, nc.Flush())
		select {
		case err := <-errc:
			require.True(t, errors.Is(err, nats.ErrPermissionViolation) || strings.Contains(err.Error(), "Permissions Violation"), "%v", err)
			t.Logf("%s publishing %s: %v", user, subject, err)
		case <-time.After(5 * time.Second):
			t.Fatalf("%s could publish %s", user, subject)
		}
	}
	denied("submitter", contract.SubjectCompleted)
	denied("poller", contract.SubjectCompleted)
	denied("producer", "$KV.batch_jobs.perm-ok")
	denied("consumer", contract.SubjectRequests)
	f.noMore(completed, "perm-sentinel")

	// No worker met a permission it lacks on the way (it would retry and
	// log it, and the job could still end).
	f.mu.Lock()
	defer f.mu.Unlock()
	for kind, procs := range f.procs {
		for _, p := range procs {
			for _, l := range p.Lines() {
				require.NotContains(t, strings.ToLower(l), "permission", "%s logged a permission error", kind)
			}
		}
	}
}

// jobsActive reports whether perm-cancel's batch runs (its job is indexed active).
func jobsActive(f *fleet) (bool, error) {
	out, _, err := f.batchfleetErr("jobs", "ls", "--status", "active", "-o", "json")
	return err == nil && strings.Contains(out, `"perm-cancel"`), err
}
