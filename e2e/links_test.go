package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/fleettest"
)

// linkSecrets are what the workers authenticate with.
type linkSecrets struct {
	natsPass  string // the NATS user "ops", given in NATS_URL
	redisPass string // the Redis ACL user "fleet", given in REDIS_URL
	seed      string // the NATS nkey user's seed, in NATS_NKEY_FILE
	seedFile  string
	apiKey    string
	clientKey []string // the base64 lines of the client key's PEM
}

// all is every secret a worker may be given.
func (s linkSecrets) all() []string {
	return append([]string{s.natsPass, s.redisPass, s.seed, s.apiKey}, s.clientKey...)
}

// TestLinks runs the fleet over authenticated, mutually authenticated TLS
// links only: NATS wants TLS with a client certificate from a private CA
// and an nkey or a password; Redis serves TLS only and wants an ACL user.
// The workers are configured by env alone. A job completes; no process
// logged a secret it was given; a worker without its certificate or with a
// wrong password exits at start with an error naming the link.
func TestLinks(t *testing.T) {
	built := time.Now()
	for _, cmd := range []string{"submitter", "poller", "notifier", "openai-emulator", "batchfleet"} {
		fleettest.BuildBinary(t, "cmd/"+cmd)
	}
	start := time.Now()
	t.Logf("binaries built in %s", start.Sub(built).Round(time.Millisecond))
	defer func() { t.Logf("the test took %s after the builds", time.Since(start).Round(time.Millisecond)) }()
	pki := fleettest.NewPKI(t)
	sec := newLinkSecrets(t, pki)
	pub := publicKey(t, sec.seed)

	ns := fleettest.StartNATS(t, fleettest.NATSTLS(t, pki), func(o *server.Options) {
		o.Nkeys = []*server.NkeyUser{{Nkey: pub}}
		o.Users = []*server.User{{Username: "ops", Password: sec.natsPass}}
	})
	rd := fleettest.StartRedis(t, fleettest.RedisTLS(pki), fleettest.RedisUser("fleet", sec.redisPass))
	natsHost := strings.TrimPrefix(ns.URL(), "tls://")
	redisURL := "rediss://fleet:" + sec.redisPass + "@" + rd.Addr() + "/0"

	f := &fleet{t: t, NATS: ns, Redis: rd, procs: map[string][]*fleettest.Process{}}
	_, f.JS = fleettest.Connect(t, "tls://ops:"+sec.natsPass+"@"+natsHost,
		nats.RootCAs(pki.CAFile), nats.ClientCert(pki.ClientCertFile, pki.ClientKeyFile))
	f.Emu, f.EmuURL = startEmulator(t, sec.apiKey)
	f.env = []string{
		"NATS_URL=" + ns.URL(), "NATS_NKEY_FILE=" + sec.seedFile,
		"NATS_CA_FILE=" + pki.CAFile, "NATS_CERT_FILE=" + pki.ClientCertFile, "NATS_KEY_FILE=" + pki.ClientKeyFile,
		"REDIS_URL=" + redisURL, "REDIS_CA_FILE=" + pki.CAFile,
		"OPENAI_API_KEY=" + sec.apiKey, "OPENAI_BASE_URL=" + f.EmuURL,
		"POLL_INITIAL_INTERVAL=100ms", "POLL_MAX_INTERVAL=1s", "POLL_RATE=1000/s", "POLL_SWEEP_INTERVAL=500ms",
	}
	// The submitter and the notifier present the nkey; the poller a
	// password in its URL, and a client certificate to Redis as well.
	f.start("submitter", 1)
	f.start("poller", 1, "NATS_URL=tls://ops:"+sec.natsPass+"@"+natsHost, "NATS_NKEY_FILE=",
		"REDIS_CERT_FILE="+pki.ClientCertFile, "REDIS_KEY_FILE="+pki.ClientKeyFile)
	f.start("notifier", 1)

	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	f.publish(contract.Request{IdempotencyKey: "links-1", Requests: chatRequests("links-1", 3)}, true)
	ev := fleettest.ReadN(t, completed, 1, 30*time.Second)[0]
	require.Equal(t, "links-1", ev.IdempotencyKey)
	require.Equal(t, contract.OutcomeSucceeded, ev.Outcome)
	require.Equal(t, contract.Counts{Total: 3, Completed: 3}, ev.RequestCounts)
	t.Logf("batch.completed %s %s after %s", ev.IdempotencyKey, ev.Outcome, time.Since(start).Round(time.Millisecond))

	// The operator command over the same links.
	out, errOut, err := f.batchfleetErr("job", "links-1", "-o", "json")
	require.NoError(t, err, errOut)
	require.Contains(t, out, `"succeeded"`)

	// Refused links fail at start, naming the link, without a stack trace.
	refusals := []struct {
		kind string
		env  []string
		want []string
	}{
		{"submitter", []string{"NATS_CERT_FILE=", "NATS_KEY_FILE="}, []string{"NATS_URL", "refused", "tls", "client certificate"}},
		{"notifier", []string{"NATS_URL=tls://ops:wrong-" + sec.natsPass + "@" + natsHost, "NATS_NKEY_FILE="}, []string{"NATS_URL", "authorization violation", "ops:redacted@"}},
		{"poller", []string{"REDIS_URL=rediss://fleet:wrong-" + sec.redisPass + "@" + rd.Addr() + "/0"}, []string{"REDIS_URL", "WRONGPASS", "fleet:redacted@"}},
		{"poller", []string{"NATS_KEY_FILE="}, []string{"NATS_CERT_FILE is set without NATS_KEY_FILE"}},
	}
	refused := make([]*fleettest.Process, len(refusals))
	for i, r := range refusals {
		bin := fleettest.BuildBinary(t, "cmd/"+r.kind)
		refused[i] = fleettest.StartProcess(t, bin, append(append([]string{}, f.env...), r.env...), r.kind+"-refused")
	}
	cliOut, cliErr, cliRunErr := runCLI(t, append(append([]string{}, f.env...), "NATS_CERT_FILE=", "NATS_KEY_FILE="), "jobs", "ls")
	for i, r := range refusals {
		p := refused[i]
		text := refusedAtStart(t, p, fmt.Sprintf("%s %v", r.kind, r.env))
		for _, w := range r.want {
			require.Contains(t, text, w, "%s %v", r.kind, r.env)
		}
		t.Logf("%s refused: %s", r.kind, p.Lines()[len(p.Lines())-1])
	}
	require.Error(t, cliRunErr)
	require.Contains(t, cliErr, "connect to NATS at tls://")
	require.Contains(t, cliErr, "tls")
	t.Logf("batchfleet jobs ls without the client certificate: %s", strings.TrimSpace(cliErr))

	// No process logged a secret it was given: a worker's start-up line
	// shows the links (paths and redacted URLs) and nothing more.
	for _, p := range f.procs["submitter"] {
		starting := p.WaitForLine(t, `"starting"`, time.Second)
		require.Contains(t, starting, pki.ClientKeyFile)
		require.Contains(t, starting, "rediss://fleet:redacted@")
		t.Logf("submitter start-up line: %s", starting)
	}
	for _, kind := range []string{"submitter", "poller", "notifier"} {
		for _, p := range f.procs[kind] {
			require.NoError(t, p.Stop(10*time.Second), kind)
		}
	}
	logs := f.processLogs(refused, func(i int) string { return refusals[i].kind },
		map[string]string{"batchfleet job": out + errOut, "batchfleet jobs ls": cliOut + cliErr})
	lines := 0
	for name, text := range logs {
		secrets := sec.all()
		if name == "emulator" {
			secrets = secrets[:3] // it is given the API key, only that
			secrets = append(secrets, sec.clientKey...)
		}
		for _, s := range secrets {
			require.NotContains(t, text, s, "%s logged a secret", name)
		}
		require.NotContains(t, text, "wrong-", "%s logged a refused password", name)
		lines += strings.Count(text, "\n") + 1
	}
	t.Logf("%d log lines of %d processes hold none of the %d secrets", lines, len(logs), len(sec.all()))
}

func newLinkSecrets(t *testing.T, pki fleettest.PKI) linkSecrets {
	t.Helper()
	kp, err := nkeys.CreateUser()
	require.NoError(t, err)
	seed, err := kp.Seed()
	require.NoError(t, err)
	s := linkSecrets{
		natsPass:  "n4ts-" + randomHex(t),
		redisPass: "r3dis-" + randomHex(t),
		seed:      string(seed),
		seedFile:  filepath.Join(t.TempDir(), "fleet.nk"),
		apiKey:    "sk-links-" + randomHex(t),
	}
	require.NoError(t, os.WriteFile(s.seedFile, seed, 0o600))
	key, err := os.ReadFile(pki.ClientKeyFile)
	require.NoError(t, err)
	for _, l := range strings.Split(string(key), "\n") {
		if l != "" && !strings.HasPrefix(l, "-----") {
			s.clientKey = append(s.clientKey, l)
		}
	}
	require.NotEmpty(t, s.clientKey)
	return s
}

func publicKey(t *testing.T, seed string) string {
	t.Helper()
	kp, err := nkeys.FromSeed([]byte(seed))
	require.NoError(t, err)
	pub, err := kp.PublicKey()
	require.NoError(t, err)
	return pub
}

func randomHex(t *testing.T) string {
	t.Helper()
	b := make([]byte, 12)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return hex.EncodeToString(b)
}

// startEmulator runs the vendor emulator with apiKey and returns it and its
// base URL (.../v1).
func startEmulator(t *testing.T, apiKey string) (*fleettest.Process, string) {
	t.Helper()
	emu := fleettest.StartProcess(t, fleettest.BuildBinary(t, "cmd/openai-emulator"), []string{
		"EMULATOR_ADDR=127.0.0.1:0", "EMULATOR_API_KEY=" + apiKey,
		"EMULATOR_VALIDATING_FOR=100ms", "EMULATOR_IN_PROGRESS_FOR=500ms", "EMULATOR_FINALIZING_FOR=100ms",
	}, "emulator")
	line := emu.WaitForLine(t, `"base_url"`, 20*time.Second)
	var l struct {
		BaseURL string `json:"base_url"`
	}
	require.NoError(t, json.Unmarshal([]byte(line), &l), line)
	return emu, l.BaseURL
}

// runCLI runs the operator command with exactly env (plus PATH and HOME).
func runCLI(t *testing.T, env []string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := exec.Command(fleettest.BuildBinary(t, "cmd/batchfleet"), args...)
	cmd.Env = append(env, "PATH="+os.Getenv("PATH"), "HOME="+os.Getenv("HOME"))
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("run batchfleet: %v", err)
	}
	return out.String(), errOut.String(), err
}
