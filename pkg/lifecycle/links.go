package lifecycle

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"

	"github.com/batchfleet/batchfleet/pkg/config"
)

// NATSOptions are the nats.go options that authenticate and secure a
// connection as l says: NATS_CREDS, NATS_NKEY_FILE, NATS_CA_FILE and the
// client certificate. A user, password or token in NATS_URL is read by
// nats.go from the URL itself. The files are read again on each
// (re)connect, so rotated files are picked up.
func NATSOptions(l config.NATSLink) ([]nats.Option, error) {
	var opts []nats.Option
	if l.NATSCreds != "" {
		opts = append(opts, nats.UserCredentials(l.NATSCreds))
	}
	if l.NATSNkeyFile != "" {
		o, err := nats.NkeyOptionFromSeed(l.NATSNkeyFile)
		if err != nil {
			return nil, fmt.Errorf("NATS_NKEY_FILE: %w", err)
		}
		opts = append(opts, o)
	}
	if l.NATSCAFile != "" {
		opts = append(opts, nats.RootCAs(l.NATSCAFile))
	}
	if l.NATSCertFile != "" {
		opts = append(opts, nats.ClientCert(l.NATSCertFile, l.NATSKeyFile))
	}
	return opts, nil
}

// RedisOptions parses REDIS_URL (ACL user and password included) and adds
// the TLS files: a rediss:// URL, REDIS_CA_FILE or a client certificate
// turn TLS on.
func RedisOptions(l config.RedisLink) (*redis.Options, error) {
	opts, err := redis.ParseURL(l.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL %q: %w", config.RedactURL(l.RedisURL), err)
	}
	if !l.TLS() {
		return opts, nil
	}
	if opts.TLSConfig == nil {
		host, _, _ := net.SplitHostPort(opts.Addr)
		opts.TLSConfig = &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	}
	if l.RedisCAFile != "" {
		if opts.TLSConfig.RootCAs, err = config.CertPool(l.RedisCAFile); err != nil {
			return nil, fmt.Errorf("REDIS_CA_FILE: %w", err)
		}
	}
	if l.RedisCertFile != "" {
		cert, err := tls.LoadX509KeyPair(l.RedisCertFile, l.RedisKeyFile)
		if err != nil {
			return nil, fmt.Errorf("REDIS_CERT_FILE and REDIS_KEY_FILE: %w", err)
		}
		opts.TLSConfig.Certificates = []tls.Certificate{cert}
	}
	return opts, nil
}

// checkRedis pings Redis once. A refused credential or certificate is a
// start-up error; an unreachable server is not (the worker starts and its
// Redis calls retry), so only a warning is logged.
func checkRedis(ctx context.Context, c *redis.Client) (warn, err error) {
	err = c.Ping(ctx).Err()
	if err == nil {
		return nil, nil
	}
	if refused(err) {
		return nil, err
	}
	return err, nil
}

// refused reports whether err is the server (NATS or Redis) refusing this
// client for good: bad credentials, a certificate it does not accept, TLS
// wanted by one side only. Retrying cannot fix these.
func refused(err error) bool {
	var nerr net.Error
	if err == nil || errors.As(err, &nerr) && nerr.Timeout() {
		return false
	}
	if errors.Is(err, nats.ErrTLS) || errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) ||
		errors.Is(err, nats.ErrAuthRevoked) || errors.Is(err, nats.ErrAccountAuthExpired) ||
		errors.Is(err, nats.ErrSecureConnRequired) || errors.Is(err, nats.ErrSecureConnWanted) ||
		errors.Is(err, nats.ErrNkeysNotSupported) {
		return true
	}
	var (
		alert     tls.AlertError
		verify    *tls.CertificateVerificationError
		authority x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		record    tls.RecordHeaderError
	)
	if errors.As(err, &alert) || errors.As(err, &verify) || errors.As(err, &authority) ||
		errors.As(err, &hostname) || errors.As(err, &invalid) || errors.As(err, &record) {
		return true
	}
	msg := err.Error()
	for _, s := range []string{"WRONGPASS", "NOAUTH", "NOPERM", "authorization violation", "tls: "} {
		if strings.Contains(strings.ToLower(msg), strings.ToLower(s)) {
			return true
		}
	}
	return false
}

// closedAfterHandshake reports whether err is a TLS connection the server
// closed right after the handshake without saying why. It is how a server
// turns away a client certificate it wants and did not get, and also how
// any refusal (a wrong password) reads when the server's reset overtakes
// its -ERR line on a busy machine, so it is only taken for a refusal once
// closedTries tries in a row have read it.
func closedAfterHandshake(err error) bool {
	return err != nil && strings.Contains(err.Error(), "closed by remote after TLS handshake")
}

// closedTries is how many tries in a row must find the connection closed
// after the handshake before a worker gives up, unless a try says why.
const closedTries = 3

// wantsClientCert reports whether err is a TLS server turning away a client
// that showed no certificate: with TLS 1.3 the client learns it after its
// handshake, as an alert or as the connection closing.
func wantsClientCert(err error) bool {
	msg := err.Error()
	for _, s := range []string{"certificate required", "bad certificate", "closed by remote after TLS handshake"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}
