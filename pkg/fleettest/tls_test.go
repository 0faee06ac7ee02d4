package fleettest_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/fleettest"
)

func TestTLSServers(t *testing.T) {
	t.Parallel()
	pki := fleettest.NewPKI(t)

	n := fleettest.StartNATS(t, fleettest.NATSTLS(t, pki))
	require.Contains(t, n.URL(), "tls://")
	nc, _ := fleettest.Connect(t, n.URL(), nats.Secure(pki.ClientTLS(t)))
	require.True(t, nc.IsConnected())
	_, err := nats.Connect(n.URL(), nats.RootCAs(pki.CAFile)) // no client certificate
	require.Error(t, err)

	r := fleettest.StartRedis(t, fleettest.RedisTLS(pki), fleettest.RedisUser("fleet", "pw"))
	require.Contains(t, r.URL(), "rediss://")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, r.Client(t).Ping(ctx).Err())
	opts, err := redis.ParseURL("rediss://fleet:wrong@" + r.Addr())
	require.NoError(t, err)
	opts.TLSConfig = pki.ClientTLS(t)
	c := redis.NewClient(opts)
	defer c.Close()
	require.ErrorContains(t, c.Ping(ctx).Err(), "WRONGPASS")
	r.Restart(t)
	r.FlushAll(t)
}
