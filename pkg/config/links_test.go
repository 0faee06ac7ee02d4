package config_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"
	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/config"
	"github.com/batchfleet/batchfleet/pkg/fleettest"
)

// secrets are files holding credentials, and the secrets in them.
type secrets struct {
	pki       fleettest.PKI
	seedFile  string
	seed      string
	credsFile string
	garbage   string // a file that is no PEM, seed or creds
}

func writeSecrets(t *testing.T) secrets {
	t.Helper()
	dir := t.TempDir()
	kp, err := nkeys.CreateUser()
	require.NoError(t, err)
	seed, err := kp.Seed()
	require.NoError(t, err)
	s := secrets{
		pki:       fleettest.NewPKI(t),
		seedFile:  filepath.Join(dir, "user.nk"),
		seed:      string(seed),
		credsFile: filepath.Join(dir, "user.creds"),
		garbage:   filepath.Join(dir, "garbage"),
	}
	require.NoError(t, os.WriteFile(s.seedFile, seed, 0o600))
	creds := "-----BEGIN NATS USER JWT-----\neyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.eyJzdWIiOiJVQSJ9.c2ln\n------END NATS USER JWT------\n\n" +
		"-----BEGIN USER NKEY SEED-----\n" + string(seed) + "\n------END USER NKEY SEED------\n"
	require.NoError(t, os.WriteFile(s.credsFile, []byte(creds), 0o600))
	require.NoError(t, os.WriteFile(s.garbage, []byte("not a key\n"), 0o600))
	return s
}

func TestLinkVariables(t *testing.T) {
	s := writeSecrets(t)
	c, err := config.Load(env(map[string]string{
		"NATS_URL":       "tls://fleet:n4ts-pw@127.0.0.1:4222,tls://s3cr3t-token@127.0.0.2:4222",
		"NATS_NKEY_FILE": s.seedFile,
		"NATS_CA_FILE":   s.pki.CAFile, "NATS_CERT_FILE": s.pki.ClientCertFile, "NATS_KEY_FILE": s.pki.ClientKeyFile,
		"REDIS_URL":     "rediss://fleet:r3dis-pw@127.0.0.1:6380/2",
		"REDIS_CA_FILE": s.pki.CAFile, "REDIS_CERT_FILE": s.pki.ClientCertFile, "REDIS_KEY_FILE": s.pki.ClientKeyFile,
	}))
	require.NoError(t, err)
	require.Equal(t, config.NATSLink{
		NATSURL:      "tls://fleet:n4ts-pw@127.0.0.1:4222,tls://s3cr3t-token@127.0.0.2:4222",
		NATSNkeyFile: s.seedFile,
		NATSCAFile:   s.pki.CAFile, NATSCertFile: s.pki.ClientCertFile, NATSKeyFile: s.pki.ClientKeyFile,
	}, c.NATSLink)
	require.Equal(t, config.RedisLink{
		RedisURL:    "rediss://fleet:r3dis-pw@127.0.0.1:6380/2",
		RedisCAFile: s.pki.CAFile, RedisCertFile: s.pki.ClientCertFile, RedisKeyFile: s.pki.ClientKeyFile,
	}, c.RedisLink)
	require.True(t, c.NATSLink.TLS())
	require.True(t, c.RedisLink.TLS())

	// The start-up log line: paths, never passwords, tokens or file contents.
	line, err := json.Marshal(c.Redacted())
	require.NoError(t, err)
	key, err := os.ReadFile(s.pki.ClientKeyFile)
	require.NoError(t, err)
	for _, secret := range append([]string{"n4ts-pw", "s3cr3t-token", "r3dis-pw", s.seed}, pemBody(key)...) {
		require.NotContains(t, string(line), secret)
	}
	r := c.Redacted()
	require.Equal(t, "tls://fleet:redacted@127.0.0.1:4222,tls://redacted@127.0.0.2:4222", r.NATSURL)
	require.Equal(t, "rediss://fleet:redacted@127.0.0.1:6380/2", r.RedisURL)
	require.Contains(t, string(line), s.seedFile)

	creds, err := config.LoadNATS(env(map[string]string{"NATS_CREDS": s.credsFile}))
	require.NoError(t, err)
	require.Equal(t, s.credsFile, creds.NATSCreds)
	require.False(t, creds.TLS())
}

// pemBody is the base64 lines of a PEM file.
func pemBody(pem []byte) []string {
	var out []string
	for _, l := range strings.Split(string(pem), "\n") {
		if l != "" && !strings.HasPrefix(l, "-----") {
			out = append(out, l)
		}
	}
	return out
}

func TestLinkErrors(t *testing.T) {
	s := writeSecrets(t)
	missing := filepath.Join(t.TempDir(), "missing.pem")
	for _, tc := range []struct {
		name string
		env  map[string]string
		want []string // in the error
	}{
		{"missing CA", map[string]string{"NATS_CA_FILE": missing}, []string{"NATS_CA_FILE", missing, "no such file"}},
		{"CA not PEM", map[string]string{"REDIS_CA_FILE": s.garbage}, []string{"REDIS_CA_FILE", s.garbage, "no PEM certificate"}},
		{"cert without key", map[string]string{"NATS_CERT_FILE": s.pki.ClientCertFile}, []string{"NATS_CERT_FILE is set without NATS_KEY_FILE"}},
		{"key without cert", map[string]string{"REDIS_KEY_FILE": s.pki.ClientKeyFile}, []string{"REDIS_KEY_FILE is set without REDIS_CERT_FILE"}},
		{"key does not match", map[string]string{"NATS_CERT_FILE": s.pki.ClientCertFile, "NATS_KEY_FILE": s.pki.ServerKeyFile}, []string{"NATS_CERT_FILE", "NATS_KEY_FILE", "does not match"}},
		{"key not PEM", map[string]string{"REDIS_CERT_FILE": s.pki.ClientCertFile, "REDIS_KEY_FILE": s.garbage}, []string{"REDIS_CERT_FILE", "REDIS_KEY_FILE", s.garbage}},
		{"missing creds", map[string]string{"NATS_CREDS": missing}, []string{"NATS_CREDS", missing}},
		{"creds without JWT", map[string]string{"NATS_CREDS": s.seedFile}, []string{"NATS_CREDS", "no user JWT"}},
		{"creds not creds", map[string]string{"NATS_CREDS": s.garbage}, []string{"NATS_CREDS", "no user JWT"}},
		{"seed not seed", map[string]string{"NATS_NKEY_FILE": s.garbage}, []string{"NATS_NKEY_FILE", s.garbage, "no user nkey seed"}},
		{"seed is a CA", map[string]string{"NATS_NKEY_FILE": s.pki.CAFile}, []string{"NATS_NKEY_FILE", "no user nkey seed"}},
		{"creds and nkey", map[string]string{"NATS_CREDS": s.credsFile, "NATS_NKEY_FILE": s.seedFile}, []string{"NATS_CREDS and NATS_NKEY_FILE are exclusive"}},
		{"NATS scheme", map[string]string{"NATS_URL": "http://u:hunter2@x"}, []string{"NATS_URL", "u:redacted@x"}},
		{"Redis scheme", map[string]string{"REDIS_URL": "http://u:hunter2@x"}, []string{"REDIS_URL", "u:redacted@x"}},
		{"Redis URL does not parse", map[string]string{"REDIS_URL": "rediss://u:hun ter2@x:port"}, []string{"REDIS_URL", "u:redacted@x:port"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Load(env(tc.env))
			require.Error(t, err)
			for _, w := range tc.want {
				require.Contains(t, err.Error(), w)
			}
			for _, secret := range []string{"hunter2", "hun ter2", s.seed, "not a key"} {
				require.NotContains(t, err.Error(), secret)
			}
		})
	}
}

func TestLinkTLSWithPlainURL(t *testing.T) {
	s := writeSecrets(t)
	// A CA with a nats:// or redis:// URL is fine: the files turn TLS on.
	c, err := config.Load(env(map[string]string{
		"NATS_URL": "nats://127.0.0.1:4222", "NATS_CA_FILE": s.pki.CAFile,
		"REDIS_URL": "redis://127.0.0.1:6379/0", "REDIS_CA_FILE": s.pki.CAFile,
	}))
	require.NoError(t, err)
	require.True(t, c.NATSLink.TLS())
	require.True(t, c.RedisLink.TLS())
	c, err = config.Load(env(nil))
	require.NoError(t, err)
	require.False(t, c.NATSLink.TLS())
	require.False(t, c.RedisLink.TLS())
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"nats://127.0.0.1:4222":                     "nats://127.0.0.1:4222",
		"nats://tok3n@h:4222":                       "nats://redacted@h:4222",
		"nats://u:p@a:1, nats://u:p@b:2":            "nats://u:redacted@a:1, nats://u:redacted@b:2",
		"redis://:p@h:6379/0":                       "redis://:redacted@h:6379/0",
		"rediss://fleet:p@ss/w,rd@h:6379/1":         "rediss://fleet:redacted@h:6379/1",
		"unix:///run/redis.sock?db=1&password=p":    "unix:///run/redis.sock?db=1&password=redacted",
		"redis://h:6379/0?client_name=w&token=t%26": "redis://h:6379/0?client_name=w&token=redacted",
		"not a url":       "not a url",
		"nats://u:p%zz@h": "nats://u:redacted@h",
	} {
		require.Equal(t, want, config.RedactURL(in), in)
	}
}
