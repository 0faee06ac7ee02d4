package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/fleettest"
	"github.com/batchfleet/batchfleet/pkg/stream"
)

// operatorChain is a NATS decentralized-auth trust chain made in the test:
// an operator, the system account and the fleet's account (JetStream on,
// unlimited), each account JWT signed by the operator.
type operatorChain struct {
	operator *jwt.OperatorClaims
	sysPub   string
	sysJWT   string
	appPub   string
	appJWT   string
	app      nkeys.KeyPair // signs the fleet's users
	opKP     nkeys.KeyPair // signs accounts
}

func newOperatorChain(t *testing.T) operatorChain {
	t.Helper()
	opKP, err := nkeys.CreateOperator()
	require.NoError(t, err)
	opPub, err := opKP.PublicKey()
	require.NoError(t, err)
	c := operatorChain{opKP: opKP}

	c.sysPub, c.sysJWT, _ = c.account(t, "SYS", false)
	c.appPub, c.appJWT, c.app = c.account(t, "FLEET", true)

	oc := jwt.NewOperatorClaims(opPub)
	oc.Name = "batchfleet-test"
	oc.SystemAccount = c.sysPub
	opJWT, err := oc.Encode(opKP)
	require.NoError(t, err)
	// The server trusts the operator as decoded from its signed JWT, as it
	// would from a config file's "operator:" entry.
	c.operator, err = jwt.DecodeOperatorClaims(opJWT)
	require.NoError(t, err)
	return c
}

// account makes an account signed by the chain's operator. With js its
// JWT enables JetStream without limits.
func (c operatorChain) account(t *testing.T, name string, js bool) (pub, token string, kp nkeys.KeyPair) {
	t.Helper()
	kp, err := nkeys.CreateAccount()
	require.NoError(t, err)
	pub, err = kp.PublicKey()
	require.NoError(t, err)
	ac := jwt.NewAccountClaims(pub)
	ac.Name = name
	if js {
		ac.Limits.JetStreamLimits = jwt.JetStreamLimits{
			MemoryStorage: jwt.NoLimit, DiskStorage: jwt.NoLimit,
			Streams: jwt.NoLimit, Consumer: jwt.NoLimit, MaxAckPending: jwt.NoLimit,
		}
	}
	token, err = ac.Encode(c.opKP)
	require.NoError(t, err)
	return pub, token, kp
}

// userCreds writes a .creds file (nsc's format) for a new user of the
// account signed by account and returns its path, the user's public key
// and its seed. A non-zero expires sets the JWT's exp.
func userCreds(t *testing.T, account nkeys.KeyPair, name string, expires time.Time) (file, pub, seed string) {
	t.Helper()
	ukp, err := nkeys.CreateUser()
	require.NoError(t, err)
	pub, err = ukp.PublicKey()
	require.NoError(t, err)
	s, err := ukp.Seed()
	require.NoError(t, err)
	uc := jwt.NewUserClaims(pub)
	uc.Name = name
	if !expires.IsZero() {
		uc.Expires = expires.Unix()
	}
	token, err := uc.Encode(account)
	require.NoError(t, err)
	creds, err := jwt.FormatUserConfig(token, s)
	require.NoError(t, err)
	file = filepath.Join(t.TempDir(), name+".creds")
	require.NoError(t, os.WriteFile(file, creds, 0o600))
	require.True(t, strings.HasPrefix(string(s), "SU"), "a user seed starts with SU")
	return file, pub, string(s)
}

// anySeed matches any nkey seed (user, account, operator).
var anySeed = regexp.MustCompile(`S[UAOCNPX][A-Z2-7]{56}`)

// TestCredsOperatorMode runs the fleet against a nats-server in operator
// (JWT) mode, over mutually authenticated TLS: the server knows an operator,
// its system account and the fleet's JetStream account from their JWTs
// (a memory resolver), and the workers' only NATS credential is NATS_CREDS
// (beside the client certificate TLS wants).
// A job completes; every worker connection is the creds' user in the
// fleet's account. Workers given the creds of a user of an account the
// server does not know, or of an expired user, exit at start with an error
// naming NATS_URL; no process logs a seed.
func TestCredsOperatorMode(t *testing.T) {
	built := time.Now()
	for _, cmd := range []string{"submitter", "poller", "notifier", "openai-emulator", "batchfleet"} {
		fleettest.BuildBinary(t, "cmd/"+cmd)
	}
	start := time.Now()
	t.Logf("binaries built in %s", start.Sub(built).Round(time.Millisecond))
	defer func() { t.Logf("the test took %s after the builds", time.Since(start).Round(time.Millisecond)) }()

	chain := newOperatorChain(t)
	credsFile, userPub, seed := userCreds(t, chain.app, "fleet", time.Time{})
	// A user of an account signed by the same operator whose JWT the
	// server was never given.
	_, _, strayKP := chain.account(t, "STRAY", true)
	strayFile, _, straySeed := userCreds(t, strayKP, "stray", time.Time{})
	// A user of the fleet's account whose JWT expired a minute ago.
	expiredFile, _, expiredSeed := userCreds(t, chain.app, "expired", time.Now().Add(-time.Minute))
	seeds := []string{seed, straySeed, expiredSeed}
	for _, s := range seeds {
		require.Regexp(t, anySeed, s)
	}

	resolver := &server.MemAccResolver{}
	require.NoError(t, resolver.Store(chain.sysPub, chain.sysJWT))
	require.NoError(t, resolver.Store(chain.appPub, chain.appJWT))
	pki := fleettest.NewPKI(t)
	ns := fleettest.StartNATS(t, fleettest.NATSTLS(t, pki), func(o *server.Options) {
		o.TrustedOperators = []*jwt.OperatorClaims{chain.operator}
		o.SystemAccount = chain.sysPub
		o.AccountResolver = resolver
	})
	require.True(t, strings.HasPrefix(ns.URL(), "tls://"), ns.URL())
	sys := ns.Server.SystemAccount()
	require.NotNil(t, sys)
	require.Equal(t, chain.sysPub, sys.Name)
	tlsOpts := []nats.Option{nats.RootCAs(pki.CAFile), nats.ClientCert(pki.ClientCertFile, pki.ClientKeyFile)}

	// Operator mode is on: TLS with the client certificate but no creds
	// is refused.
	_, err := nats.Connect(ns.URL(), append(tlsOpts, nats.MaxReconnects(0))...)
	require.ErrorIs(t, err, nats.ErrAuthorization, "a client without creds must be refused")

	// The fleet as startFleet makes it, but with the test's own client
	// presenting the creds (startFleet connects without any).
	f := &fleet{t: t, NATS: ns, Redis: fleettest.StartRedis(t), procs: map[string][]*fleettest.Process{}}
	_, f.JS = fleettest.Connect(t, ns.URL(), append(tlsOpts, nats.UserCredentials(credsFile))...)
	f.Emu, f.EmuURL = startEmulator(t, "sk-test")
	f.env = []string{
		"NATS_URL=" + ns.URL(), "NATS_CREDS=" + credsFile,
		"NATS_CA_FILE=" + pki.CAFile, "NATS_CERT_FILE=" + pki.ClientCertFile, "NATS_KEY_FILE=" + pki.ClientKeyFile,
		"REDIS_URL=" + f.Redis.URL(),
		"OPENAI_API_KEY=sk-test", "OPENAI_BASE_URL=" + f.EmuURL,
		"POLL_INITIAL_INTERVAL=100ms", "POLL_MAX_INTERVAL=1s", "POLL_RATE=1000/s", "POLL_SWEEP_INTERVAL=500ms",
	}
	f.startAll()

	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	f.publish(contract.Request{IdempotencyKey: "creds-1", Requests: chatRequests("creds-1", 3)}, true)
	ev := fleettest.ReadN(t, completed, 1, 30*time.Second)[0]
	require.Equal(t, "creds-1", ev.IdempotencyKey)
	require.Equal(t, contract.OutcomeSucceeded, ev.Outcome)
	require.Equal(t, contract.Counts{Total: 3, Completed: 3}, ev.RequestCounts)
	t.Logf("batch.completed %s %s after %s", ev.IdempotencyKey, ev.Outcome, time.Since(start).Round(time.Millisecond))

	// Every worker connection is the creds' user, in the fleet's account,
	// over TLS; the streams are the fleet account's.
	connz, err := ns.Server.Connz(&server.ConnzOptions{Username: true, Limit: 1024})
	require.NoError(t, err)
	workers := 0
	for _, c := range connz.Conns {
		require.Equal(t, chain.appPub, c.Account, "connection %d %q", c.Cid, c.Name)
		require.Equal(t, userPub, c.AuthorizedUser, "connection %d %q", c.Cid, c.Name)
		require.NotEmpty(t, c.TLSVersion, "connection %d %q", c.Cid, c.Name)
		if c.Name == "batchfleet" {
			workers++
		}
	}
	require.Equal(t, 3, workers, "worker connections: %+v", connz.Conns)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := f.JS.AccountInfo(ctx)
	require.NoError(t, err)
	require.GreaterOrEqual(t, info.Streams, 3, "the fleet account's streams")
	_, err = f.JS.Stream(ctx, stream.Requests)
	require.NoError(t, err, "the requests stream is in the creds' account")

	// The operator command with the same creds.
	out, errOut, err := f.batchfleetErr("job", "creds-1", "-o", "json")
	require.NoError(t, err, errOut)
	require.Contains(t, out, `"succeeded"`)

	// Creds the server does not accept fail at start, naming the link,
	// without a stack trace.
	refusals := []struct {
		kind, why, creds string
		want             []string
	}{
		{"submitter", "unknown account", strayFile, []string{"NATS_URL", "refused", "NATS_CREDS " + strayFile, "authorization violation"}},
		{"poller", "expired user", expiredFile, []string{"NATS_URL", "refused", "NATS_CREDS " + expiredFile, "authorization violation"}},
	}
	refused := make([]*fleettest.Process, len(refusals))
	for i, r := range refusals {
		refused[i] = fleettest.StartProcess(t, fleettest.BuildBinary(t, "cmd/"+r.kind),
			append(append([]string{}, f.env...), "NATS_CREDS="+r.creds), r.kind+"-"+strings.ReplaceAll(r.why, " ", "-"))
	}
	cliOut, cliErr, cliRunErr := runCLI(t, append(append([]string{}, f.env...), "NATS_CREDS="+strayFile), "jobs", "ls")
	for i, r := range refusals {
		p := refused[i]
		text := refusedAtStart(t, p, fmt.Sprintf("%s with the creds of an %s", r.kind, r.why))
		for _, w := range r.want {
			require.Contains(t, strings.ToLower(text), strings.ToLower(w), "%s with the creds of an %s", r.kind, r.why)
		}
		// Its start-up line names the creds file it was given, by path.
		require.Contains(t, text, `"NATSCreds":"`+r.creds+`"`)
		require.NotContains(t, text, `"running"`)
		t.Logf("%s with the creds of an %s refused: %s", r.kind, r.why, p.Lines()[len(p.Lines())-1])
	}
	require.Error(t, cliRunErr)
	require.Contains(t, cliErr, "NATS")
	t.Logf("batchfleet jobs ls with the creds of an unknown account: %s", strings.TrimSpace(cliErr))

	for _, kind := range []string{"submitter", "poller", "notifier"} {
		for _, p := range f.procs[kind] {
			require.NoError(t, p.Stop(10*time.Second), kind)
		}
	}
	// The good workers still name their creds file at start, by path.
	starting := f.procs["submitter"][0].WaitForLine(t, `"starting"`, time.Second)
	require.Contains(t, starting, `"NATSCreds":"`+credsFile+`"`)

	logs := f.processLogs(refused, func(i int) string { return refusals[i].kind },
		map[string]string{"batchfleet job": out + errOut, "batchfleet jobs ls": cliOut + cliErr})
	lines := 0
	for name, text := range logs {
		for _, s := range seeds {
			require.NotContains(t, text, s, "%s logged a creds seed", name)
		}
		require.NotRegexp(t, anySeed, text, "%s logged something shaped like an nkey seed", name)
		require.NotContains(t, text, "BEGIN USER NKEY SEED", "%s logged a creds file", name)
		lines += strings.Count(text, "\n") + 1
	}
	t.Logf("%d log lines of %d processes hold none of the %d seeds", lines, len(logs), len(seeds))
}
