package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"

	"github.com/nats-io/nkeys"
)

// NATSLink is how a process reaches NATS: the URL and the credential and TLS
// files. The config holds paths only; the files are read (and checked) by
// Validate and again when connecting, so no secret is ever in the config.
type NATSLink struct {
	// NATSURL is NATS_URL: server URLs, comma-separated; user:password@
	// or token@ in a URL authenticates. Defaults to nats://127.0.0.1:4222.
	NATSURL string
	// NATSCreds is NATS_CREDS: a .creds file (user JWT and nkey seed).
	NATSCreds string `json:",omitempty"`
	// NATSNkeyFile is NATS_NKEY_FILE: a user nkey seed file (SU...).
	NATSNkeyFile string `json:",omitempty"`
	// NATSCAFile is NATS_CA_FILE: PEM certificates of the CAs that sign the
	// server's certificate. Setting it (or a client certificate) makes the
	// client require TLS, also with a nats:// URL.
	NATSCAFile string `json:",omitempty"`
	// NATSCertFile is NATS_CERT_FILE: the PEM client certificate (mTLS); needs NATSKeyFile.
	NATSCertFile string `json:",omitempty"`
	// NATSKeyFile is NATS_KEY_FILE: the PEM private key of NATSCertFile.
	NATSKeyFile string `json:",omitempty"`
}

// RedisLink is how a process reaches Redis: the URL and the TLS files.
type RedisLink struct {
	// RedisURL is REDIS_URL: redis:// or rediss:// (TLS), with an ACL
	// user:password@ if any. Defaults to redis://127.0.0.1:6379/0.
	RedisURL string
	// RedisCAFile is REDIS_CA_FILE: PEM certificates of the CAs that sign the
	// server's certificate. Setting it (or a client certificate) turns TLS
	// on, also with a redis:// URL.
	RedisCAFile string `json:",omitempty"`
	// RedisCertFile is REDIS_CERT_FILE: the PEM client certificate; needs RedisKeyFile.
	RedisCertFile string `json:",omitempty"`
	// RedisKeyFile is REDIS_KEY_FILE: the PEM private key of RedisCertFile.
	RedisKeyFile string `json:",omitempty"`
}

// LoadNATS reads only the NATS variables (NATS_URL, NATS_CREDS,
// NATS_NKEY_FILE, NATS_CA_FILE, NATS_CERT_FILE, NATS_KEY_FILE) and validates
// them, for tools that need nothing else (the operator CLI).
func LoadNATS(env Lookup) (NATSLink, error) {
	p := parser{env: env}
	l := p.natsLink()
	return l, l.Validate()
}

func (p *parser) natsLink() NATSLink {
	return NATSLink{
		NATSURL:      p.str("NATS_URL", "nats://127.0.0.1:4222"),
		NATSCreds:    p.str("NATS_CREDS", ""),
		NATSNkeyFile: p.str("NATS_NKEY_FILE", ""),
		NATSCAFile:   p.str("NATS_CA_FILE", ""),
		NATSCertFile: p.str("NATS_CERT_FILE", ""),
		NATSKeyFile:  p.str("NATS_KEY_FILE", ""),
	}
}

func (p *parser) redisLink() RedisLink {
	return RedisLink{
		RedisURL:      p.str("REDIS_URL", "redis://127.0.0.1:6379/0"),
		RedisCAFile:   p.str("REDIS_CA_FILE", ""),
		RedisCertFile: p.str("REDIS_CERT_FILE", ""),
		RedisKeyFile:  p.str("REDIS_KEY_FILE", ""),
	}
}

// Validate checks the URL and reads every file set: each must exist and
// parse. Errors name the variable and the path, never the contents.
func (l NATSLink) Validate() error {
	var errs []error
	if !validURL(l.NATSURL, "nats", "tls", "ws", "wss") {
		errs = append(errs, fmt.Errorf("NATS_URL %q is not a nats:// or tls:// URL", RedactURL(l.NATSURL)))
	}
	if l.NATSCreds != "" && l.NATSNkeyFile != "" {
		errs = append(errs, errors.New("NATS_CREDS and NATS_NKEY_FILE are exclusive: set one"))
	}
	if l.NATSCreds != "" {
		errs = append(errs, checkCreds("NATS_CREDS", l.NATSCreds))
	}
	if l.NATSNkeyFile != "" {
		errs = append(errs, checkSeed("NATS_NKEY_FILE", l.NATSNkeyFile))
	}
	errs = append(errs, checkTLSFiles("NATS", l.NATSCAFile, l.NATSCertFile, l.NATSKeyFile))
	return errors.Join(errs...)
}

// Validate checks the URL and reads every file set: each must exist and
// parse. Errors name the variable and the path, never the contents.
func (l RedisLink) Validate() error {
	var errs []error
	if u, err := url.Parse(l.RedisURL); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix") {
		errs = append(errs, fmt.Errorf("REDIS_URL %q is not a redis:// or rediss:// URL", RedactURL(l.RedisURL)))
	}
	errs = append(errs, checkTLSFiles("REDIS", l.RedisCAFile, l.RedisCertFile, l.RedisKeyFile))
	return errors.Join(errs...)
}

// TLS reports whether the NATS link uses TLS files (which make TLS required).
func (l NATSLink) TLS() bool { return l.NATSCAFile != "" || l.NATSCertFile != "" }

// TLS reports whether the Redis link uses TLS: a rediss:// URL or TLS files.
func (l RedisLink) TLS() bool {
	return strings.HasPrefix(l.RedisURL, "rediss://") || l.RedisCAFile != "" || l.RedisCertFile != ""
}

// checkTLSFiles checks <prefix>_CA_FILE, <prefix>_CERT_FILE and <prefix>_KEY_FILE.
func checkTLSFiles(prefix, caFile, certFile, keyFile string) error {
	var errs []error
	if caFile != "" {
		if _, err := CertPool(caFile); err != nil {
			errs = append(errs, fmt.Errorf("%s_CA_FILE: %w", prefix, err))
		}
	}
	switch {
	case certFile != "" && keyFile == "":
		errs = append(errs, fmt.Errorf("%s_CERT_FILE is set without %s_KEY_FILE", prefix, prefix))
	case certFile == "" && keyFile != "":
		errs = append(errs, fmt.Errorf("%s_KEY_FILE is set without %s_CERT_FILE", prefix, prefix))
	case certFile != "":
		if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
			errs = append(errs, fmt.Errorf("%s_CERT_FILE %s and %s_KEY_FILE %s: %w", prefix, certFile, prefix, keyFile, err))
		}
	}
	return errors.Join(errs...)
}

// CertPool reads the PEM certificates of file into a pool; a file without
// any is an error.
func CertPool(file string) (*x509.CertPool, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%s: no PEM certificate in it", file)
	}
	return pool, nil
}

// checkSeed checks that file holds a user nkey seed (raw or decorated).
func checkSeed(name, file string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	defer wipe(data)
	kp, err := nkeys.ParseDecoratedUserNKey(data)
	if err != nil {
		return fmt.Errorf("%s %s: no user nkey seed in it: %w", name, file, err)
	}
	kp.Wipe()
	return nil
}

// checkCreds checks that file holds a decorated user JWT and its user seed.
func checkCreds(name, file string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	defer wipe(data)
	if jwt, err := nkeys.ParseDecoratedJWT(data); err != nil || strings.Count(jwt, ".") != 2 || strings.ContainsAny(jwt, " \n") {
		return fmt.Errorf("%s %s: no user JWT in it (want a .creds file from nsc)", name, file)
	}
	kp, err := nkeys.ParseDecoratedUserNKey(data)
	if err != nil {
		return fmt.Errorf("%s %s: no user nkey seed in it: %w", name, file, err)
	}
	kp.Wipe()
	return nil
}

func wipe(b []byte) {
	for i := range b {
		b[i] = 'x'
	}
}

// RedactURL masks what authenticates in one URL or a comma-separated list:
// a password becomes "redacted" (the user name stays), a lone user name
// (a token) becomes "redacted", and so do password and token query values.
// It works on text that does not parse as a URL too: the userinfo runs to
// the last "@" of each URL, so an unescaped "@", "/" or ":" in a password
// is still covered.
func RedactURL(s string) string {
	var out []string
	for _, part := range splitURLs(s) {
		out = append(out, redactOne(part))
	}
	return strings.Join(out, ",")
}

// splitURLs splits a list at the commas that start a new URL
// ("...,nats://"), so a comma inside a password stays in its URL.
func splitURLs(s string) []string {
	var parts []string
	for {
		i := nextURLStart(s)
		if i < 0 {
			return append(parts, s)
		}
		parts = append(parts, s[:i])
		s = s[i+1:]
	}
}

var listSep = regexp.MustCompile(`,\s*[A-Za-z][A-Za-z0-9+.-]*://`)

func nextURLStart(s string) int {
	loc := listSep.FindStringIndex(s)
	if loc == nil {
		return -1
	}
	return loc[0]
}

func redactOne(s string) string {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return s
	}
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		user, _, hasPass := strings.Cut(rest[:at], ":")
		if hasPass {
			rest = user + ":redacted" + rest[at:]
		} else {
			rest = "redacted" + rest[at:]
		}
	}
	s = scheme + "://" + rest
	if base, query, ok := strings.Cut(s, "?"); ok {
		q, err := url.ParseQuery(query)
		if err != nil {
			return base + "?redacted"
		}
		for k := range q {
			if lk := strings.ToLower(k); strings.Contains(lk, "pass") || strings.Contains(lk, "token") || strings.Contains(lk, "secret") {
				q.Set(k, "redacted")
			}
		}
		s = base + "?" + q.Encode()
	}
	return s
}
