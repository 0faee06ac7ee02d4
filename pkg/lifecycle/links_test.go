package lifecycle_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/config"
	"github.com/batchfleet/batchfleet/pkg/fleettest"
	"github.com/batchfleet/batchfleet/pkg/lifecycle"
)

// Connect over TLS with client certificates to a NATS that wants an nkey
// or a password and to a Redis that wants an ACL user; a refused
// credential or certificate fails Connect at once, naming the link.
func TestConnectLinks(t *testing.T) {
	t.Parallel()
	pki := fleettest.NewPKI(t)
	kp, err := nkeys.CreateUser()
	require.NoError(t, err)
	seed, err := kp.Seed()
	require.NoError(t, err)
	pub, err := kp.PublicKey()
	require.NoError(t, err)
	seedFile := filepath.Join(t.TempDir(), "fleet.nk")
	require.NoError(t, os.WriteFile(seedFile, seed, 0o600))

	ns := fleettest.StartNATS(t, fleettest.NATSTLS(t, pki), func(o *server.Options) {
		o.Nkeys = []*server.NkeyUser{{Nkey: pub}}
		o.Users = []*server.User{{Username: "ops", Password: "n4ts-pw"}}
	})
	rd := fleettest.StartRedis(t, fleettest.RedisTLS(pki), fleettest.RedisUser("fleet", "r3dis-pw"))
	natsHost := strings.TrimPrefix(ns.URL(), "tls://")
	good := map[string]string{
		"NATS_URL": ns.URL(), "NATS_NKEY_FILE": seedFile, "NATS_CA_FILE": pki.CAFile,
		"NATS_CERT_FILE": pki.ClientCertFile, "NATS_KEY_FILE": pki.ClientKeyFile,
		"REDIS_URL": "rediss://fleet:r3dis-pw@" + rd.Addr() + "/0", "REDIS_CA_FILE": pki.CAFile,
	}
	with := func(t *testing.T, change map[string]string) config.Config {
		m := map[string]string{}
		for k, v := range good {
			m[k] = v
		}
		for k, v := range change {
			if v == "" {
				delete(m, k)
			} else {
				m[k] = v
			}
		}
		cfg, err := config.Load(func(k string) (string, bool) { v, ok := m[k]; return v, ok })
		require.NoError(t, err)
		return cfg
	}
	connect := func(t *testing.T, cfg config.Config) error {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		inf, err := lifecycle.Connect(ctx, cfg, zerolog.Nop())
		if err == nil {
			defer inf.Close()
			require.NoError(t, inf.Redis.Ping(ctx).Err())
			_, err = inf.JS.AccountInfo(ctx)
		}
		return err
	}

	require.NoError(t, connect(t, with(t, nil)), "nkey, client certificate, ACL user")
	require.NoError(t, connect(t, with(t, map[string]string{
		"NATS_URL": "nats://ops:n4ts-pw@" + natsHost, "NATS_NKEY_FILE": "",
		"REDIS_URL":       "redis://fleet:r3dis-pw@" + rd.Addr() + "/0",
		"REDIS_CERT_FILE": pki.ClientCertFile, "REDIS_KEY_FILE": pki.ClientKeyFile,
	})), "password in the URL, a nats:// URL, TLS files with a redis:// URL, a Redis client certificate")

	for name, tc := range map[string]struct {
		change map[string]string
		want   string
	}{
		"no client certificate": {map[string]string{"NATS_CERT_FILE": "", "NATS_KEY_FILE": ""}, "client certificate"},
		"no CA":                 {map[string]string{"NATS_CA_FILE": ""}, "NATS_URL"},
		"wrong NATS password":   {map[string]string{"NATS_URL": "tls://ops:wrong-pw@" + natsHost, "NATS_NKEY_FILE": ""}, "NATS_URL"},
		"no NATS credentials":   {map[string]string{"NATS_NKEY_FILE": ""}, "NATS_URL"},
		"wrong Redis password":  {map[string]string{"REDIS_URL": "rediss://fleet:wrong-pw@" + rd.Addr() + "/0"}, "REDIS_URL"},
		"no Redis credentials":  {map[string]string{"REDIS_URL": rd.URL()}, "REDIS_URL"},
	} {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			err := connect(t, with(t, tc.change))
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
			require.Contains(t, err.Error(), "refused")
			require.Less(t, time.Since(start), 5*time.Second, "a refusal is not retried")
			for _, secret := range []string{"wrong-pw", "n4ts-pw", "r3dis-pw", string(seed)} {
				require.NotContains(t, err.Error(), secret)
			}
			t.Log(err)
		})
	}
}

// A server that closes the connection right after the TLS handshake says
// nothing; it is not taken for a refusal until three tries in a row find
// it, so a later try that says why (here the -ERR the first
// tries lost to the reset) is the error Connect returns.
func TestConnectWaitsForTheReason(t *testing.T) {
	t.Parallel()
	pki := fleettest.NewPKI(t)
	cert, err := tls.LoadX509KeyPair(pki.ServerCertFile, pki.ServerKeyFile)
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	var tries atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { _ = c.Close() }()
				_, _ = io.WriteString(c, `INFO {"server_id":"fake","version":"2.15.0","proto":1,"max_payload":1048576,"tls_required":true}`+"\r\n")
				tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
				if tc.Handshake() != nil {
					return
				}
				if _, err := bufio.NewReader(tc).ReadString('\n'); err != nil { // CONNECT
					return
				}
				if tries.Add(1) >= 3 {
					_, _ = io.WriteString(tc, "-ERR 'Authorization Violation'\r\n")
				}
			}()
		}
	}()
	cfg, err := config.Load(func(k string) (string, bool) {
		v, ok := map[string]string{"NATS_URL": "tls://" + ln.Addr().String(), "NATS_CA_FILE": pki.CAFile}[k]
		return v, ok
	})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err = lifecycle.Connect(ctx, cfg, zerolog.Nop())
	require.Error(t, err)
	require.Contains(t, strings.ToLower(err.Error()), "authorization violation", "the reason, not the first silent close")
	require.GreaterOrEqual(t, tries.Load(), int32(3))
	t.Log(err)
}
