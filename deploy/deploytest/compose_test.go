package deploytest

import (
	"context"
	"flag"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/emulator"
)

// loadCompose loads file the way `docker compose` does (schema validation,
// interpolation, merge keys, consistency checks, paths resolved against dir),
// with env as the only environment: no OS environment and no .env file, so
// the result does not depend on the machine.
func loadCompose(t *testing.T, file, dir string, env map[string]string) (*types.Project, error) {
	t.Helper()
	var kv []string
	for k, v := range env {
		kv = append(kv, k+"="+v)
	}
	opts, err := cli.NewProjectOptions([]string{file},
		cli.WithWorkingDirectory(dir),
		cli.WithEnv(kv),
		cli.WithInterpolation(true),
		cli.WithNormalization(true),
		cli.WithConsistency(true),
		cli.WithResolvedPaths(true),
	)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return opts.LoadProject(ctx)
}

// serviceEnv is a service's resolved environment (unset variables left out).
func serviceEnv(s types.ServiceConfig) map[string]string {
	env := map[string]string{}
	for k, v := range s.Environment {
		if v != nil {
			env[k] = *v
		}
	}
	return env
}

var natsServices = []string{"nats-1", "nats-2", "nats-3"}

// checkCompose checks a loaded project; cmds are the binaries the image has.
func checkCompose(project *types.Project, cmds map[string]bool) problems {
	var p problems
	svc := func(name string) (types.ServiceConfig, bool) {
		s, ok := project.Services[name]
		if !ok {
			p.add("compose: service %s is missing", name)
		}
		return s, ok
	}
	for _, name := range append(append([]string{"redis", "emulator"}, natsServices...), workers...) {
		svc(name)
	}
	for name, s := range project.Services {
		if s.Image == "" && s.Build == nil {
			p.add("compose: service %s has neither image nor build", name)
		}
	}

	// The image built from this repository, and the binary each service runs.
	checkBuilt := func(name string, s types.ServiceConfig) {
		if s.Image == "" {
			p.add("compose: %s has no image (tag for the built image)", name)
		}
		if s.Build == nil {
			p.add("compose: %s has no build", name)
		} else {
			dockerfile := cmpOr(s.Build.Dockerfile, "Dockerfile")
			if !filepath.IsAbs(dockerfile) {
				dockerfile = filepath.Join(s.Build.Context, dockerfile)
			}
			if _, err := os.Stat(dockerfile); err != nil {
				p.add("compose: %s build: %v", name, err)
			}
		}
		bin := name
		if name == "emulator" {
			bin = "openai-emulator"
		}
		if want := binDir + bin; len(s.Entrypoint) != 1 || s.Entrypoint[0] != want {
			p.add("compose: %s entrypoint %q, want [%q]", name, []string(s.Entrypoint), want)
		}
		if !cmds[bin] {
			p.add("compose: %s runs %s, but there is no cmd/%s for the Dockerfile to build", name, bin, bin)
		}
	}

	// NATS: a 3-node JetStream cluster on volumes, flags parsed by nats-server itself.
	clusterNames := map[string]bool{}
	for _, name := range natsServices {
		s, ok := project.Services[name]
		if !ok {
			continue
		}
		if major, minor, ok := imageVersion(s.Image); !ok || major < 2 || (major == 2 && minor < 10) {
			p.add("compose: %s image %q: want nats 2.10 or newer (pinned)", name, s.Image)
		}
		fs := flag.NewFlagSet(name, flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		opts, err := server.ConfigureOptions(fs, s.Command, func() {}, func() {}, func() {})
		if err != nil {
			p.add("compose: %s command %q: nats-server rejects it: %v", name, []string(s.Command), err)
			continue
		}
		if !opts.JetStream {
			p.add("compose: %s: JetStream is off (want -js)", name)
		}
		if opts.ServerName != name {
			p.add("compose: %s: server name %q, want the service name", name, opts.ServerName)
		}
		if !slices.ContainsFunc(s.Volumes, func(v types.ServiceVolumeConfig) bool {
			return v.Type == types.VolumeTypeVolume && v.Target == opts.StoreDir
		}) {
			p.add("compose: %s: JetStream store dir %q is not on a named volume", name, opts.StoreDir)
		}
		clusterNames[opts.Cluster.Name] = true
		var routes []string
		for _, u := range opts.Routes {
			routes = append(routes, u.Hostname())
			if u.Port() != strconv.Itoa(opts.Cluster.Port) {
				p.add("compose: %s: route %s does not use the cluster port %d", name, u, opts.Cluster.Port)
			}
		}
		slices.Sort(routes)
		if !slices.Equal(routes, natsServices) {
			p.add("compose: %s: routes %v, want %v", name, routes, natsServices)
		}
		if s.HealthCheck == nil || !slices.ContainsFunc(s.HealthCheck.Test, func(a string) bool {
			return strings.Contains(a, ":"+strconv.Itoa(opts.HTTPPort)+"/healthz")
		}) {
			p.add("compose: %s: no healthcheck on its monitoring port %d /healthz", name, opts.HTTPPort)
		}
	}
	if len(clusterNames) != 1 || clusterNames[""] {
		p.add("compose: the NATS servers do not share one cluster name: %v", clusterNames)
	}

	if s, ok := project.Services["redis"]; ok {
		if major, _, ok := imageVersion(s.Image); !ok || major != 7 {
			p.add("compose: redis image %q, want redis 7", s.Image)
		}
		if !strings.Contains(strings.Join(s.Command, " "), "--appendonly yes") {
			p.add("compose: redis runs without AOF (--appendonly yes)")
		}
		if !slices.ContainsFunc(s.Volumes, func(v types.ServiceVolumeConfig) bool { return v.Target == "/data" }) {
			p.add("compose: redis /data is not on a volume")
		}
	}

	emu, haveEmu := project.Services["emulator"]
	var emuEnv map[string]string
	if haveEmu {
		checkBuilt("emulator", emu)
		emuEnv = serviceEnv(emu)
		if _, _, err := emulator.LoadEnv(func(k string) (string, bool) { v, ok := emuEnv[k]; return v, ok }); err != nil {
			p.add("compose: emulator env fails the emulator's validation: %v", err)
		}
	}

	for _, name := range workers {
		s, ok := project.Services[name]
		if !ok {
			continue
		}
		checkBuilt(name, s)
		env := serviceEnv(s)
		checkWorkerEnv(&p, "compose", name, env)
		if env["STREAM_REPLICAS"] != strconv.Itoa(len(natsServices)) {
			p.add("compose: %s STREAM_REPLICAS=%q, want %d (one replica per NATS server)", name, env["STREAM_REPLICAS"], len(natsServices))
		}
		for _, part := range strings.Split(env["NATS_URL"], ",") {
			if u, err := url.Parse(strings.TrimSpace(part)); err != nil || !slices.Contains(natsServices, u.Hostname()) {
				p.add("compose: %s NATS_URL %q names no NATS service", name, part)
			}
		}
		if u, err := url.Parse(env["REDIS_URL"]); err != nil || u.Hostname() != "redis" {
			p.add("compose: %s REDIS_URL %q does not name the redis service", name, env["REDIS_URL"])
		}
		if u, err := url.Parse(env["OPENAI_BASE_URL"]); err == nil && u.Hostname() == "emulator" && haveEmu {
			port, err := addrPort(emuEnv["EMULATOR_ADDR"])
			if err != nil || u.Port() != strconv.Itoa(port) || u.Path != "/v1" {
				p.add("compose: %s OPENAI_BASE_URL %s does not match the emulator's EMULATOR_ADDR %q (/v1)", name, u, emuEnv["EMULATOR_ADDR"])
			}
			if emuEnv["EMULATOR_API_KEY"] != "" && emuEnv["EMULATOR_API_KEY"] != env["OPENAI_API_KEY"] {
				p.add("compose: %s OPENAI_API_KEY differs from the emulator's EMULATOR_API_KEY", name)
			}
		}
		if s.GetScale() != 2 {
			p.add("compose: %s has %d replicas, want 2", name, s.GetScale())
		}
		if s.StopGracePeriod == nil || time.Duration(*s.StopGracePeriod) < 15*time.Second {
			p.add("compose: %s stop_grace_period %v, want 15s (SIGTERM, then up to 10s to stop)", name, s.StopGracePeriod)
		}
		if s.Restart != types.RestartPolicyUnlessStopped {
			p.add("compose: %s restart %q, want unless-stopped", name, s.Restart)
		}
		for _, dep := range append([]string{"redis"}, natsServices...) {
			if _, ok := s.DependsOn[dep]; !ok {
				p.add("compose: %s does not depend on %s", name, dep)
			}
		}
		for dep, d := range s.DependsOn {
			if d.Condition == types.ServiceConditionHealthy {
				if h := project.Services[dep].HealthCheck; h == nil || h.Disable || len(h.Test) == 0 {
					p.add("compose: %s waits for %s to be healthy, but %s has no healthcheck", name, dep, dep)
				}
			}
		}
		if s.HealthCheck != nil && !s.HealthCheck.Disable && len(s.HealthCheck.Test) > 0 {
			p.add("compose: %s has a healthcheck, but distroless has no shell or curl to run it", name)
		}
		if name == "poller" && haveEmu && emuEnv["EMULATOR_WEBHOOK_URL"] != "" {
			u, err := url.Parse(emuEnv["EMULATOR_WEBHOOK_URL"])
			port, perr := addrPort(env["VENDOR_WEBHOOK_ADDR"])
			if err != nil || perr != nil || u.Hostname() != "poller" || u.Port() != strconv.Itoa(port) || u.Path != "/webhooks/openai" {
				p.add("compose: emulator EMULATOR_WEBHOOK_URL %q does not reach the pollers' VENDOR_WEBHOOK_ADDR %q at /webhooks/openai",
					emuEnv["EMULATOR_WEBHOOK_URL"], env["VENDOR_WEBHOOK_ADDR"])
			}
			if emuEnv["EMULATOR_WEBHOOK_SECRET"] != env["OPENAI_WEBHOOK_SECRET"] {
				p.add("compose: the emulator's EMULATOR_WEBHOOK_SECRET differs from the pollers' OPENAI_WEBHOOK_SECRET")
			}
		}
	}
	return p
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func TestCompose(t *testing.T) {
	root := repoRoot(t)
	cmds := commands(t, root)
	file := filepath.Join(root, "docker-compose.yml")

	t.Run("defaults", func(t *testing.T) {
		// Nothing set: every ${VAR:-default} takes its local default.
		project, err := loadCompose(t, file, root, nil)
		require.NoError(t, err)
		require.Equal(t, "batchfleet", project.Name)
		checkCompose(project, cmds).report(t)
	})

	t.Run("real API", func(t *testing.T) {
		// What the file's comment tells operators to set for the real API.
		env := map[string]string{
			"OPENAI_BASE_URL":       "https://api.openai.com/v1",
			"OPENAI_API_KEY":        "sk-test",
			"OPENAI_WEBHOOK_SECRET": "whsec_" + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
			"POLL_INITIAL_INTERVAL": "5s",
			"POLL_MAX_INTERVAL":     "5m",
			"WEBHOOK_URLS":          "https://hooks.example.com/batch",
			"WEBHOOK_SECRET":        "raw-secret",
		}
		project, err := loadCompose(t, file, root, env)
		require.NoError(t, err)
		checkCompose(project, cmds).report(t)
		for _, w := range workers {
			got := serviceEnv(project.Services[w])
			for k, v := range env {
				require.Equal(t, v, got[k], "%s %s", w, k)
			}
		}
	})
}

// TestComposeCheckFails shows that the loader and the checks reject broken
// variants of the real file.
func TestComposeCheckFails(t *testing.T) {
	root := repoRoot(t)
	cmds := commands(t, root)
	b, err := os.ReadFile(filepath.Join(root, "docker-compose.yml"))
	require.NoError(t, err)
	src := string(b)
	dockerfile, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	require.NoError(t, err)

	load := func(t *testing.T, src string) (*types.Project, error) {
		dir := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(dir, "Dockerfile"), dockerfile, 0o644))
		file := filepath.Join(dir, "docker-compose.yml")
		require.NoError(t, os.WriteFile(file, []byte(src), 0o644))
		return loadCompose(t, file, dir, nil)
	}
	replace := func(t *testing.T, old, new string) string {
		require.Contains(t, src, old)
		return strings.Replace(src, old, new, 1)
	}

	t.Run("schema", func(t *testing.T) {
		_, err := load(t, replace(t, "stop_grace_period: 15s", "stop_grace_periods: 15s"))
		require.ErrorContains(t, err, "stop_grace_periods")
	})
	t.Run("consistency", func(t *testing.T) {
		_, err := load(t, replace(t, "- redis-data:/data", "- redis-dta:/data"))
		require.ErrorContains(t, err, "redis-dta")
	})
	for _, tc := range []struct {
		name, old, new string
		want           []string
	}{
		{"worker env", "  REDIS_URL: redis://redis:6379/0", "  REDIS_URL: http://redis:6379/0", []string{"REDIS_URL"}},
		{"poll interval", "${POLL_INITIAL_INTERVAL:-1s}", "${POLL_INITIAL_INTERVAL:-1h}", []string{"POLL_INITIAL_INTERVAL"}},
		{"entrypoint", `entrypoint: ["/usr/local/bin/poller"]`, `entrypoint: ["/usr/local/bin/pollers"]`, []string{"poller entrypoint"}},
		{"nats flag", "--name=nats-2", "--nmae=nats-2", []string{"nats-2", "nats-server rejects"}},
		{"nats routes", "--routes=nats://nats-1:6222,nats://nats-2:6222,nats://nats-3:6222\n    volumes:\n      - nats-3-data",
			"--routes=nats://nats-1:6222,nats://nats-2:6222\n    volumes:\n      - nats-3-data", []string{"nats-3: routes"}},
		{"webhook secret", "EMULATOR_WEBHOOK_SECRET: ${OPENAI_WEBHOOK_SECRET:-whsec_", "EMULATOR_WEBHOOK_SECRET: ${OPENAI_WEBHOOK_SECRET:-whsec_X", []string{"EMULATOR_WEBHOOK_SECRET"}},
		{"replicas", "replicas: 2\n\n  notifier:", "replicas: 1\n\n  notifier:", []string{"poller has 1 replicas"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			project, err := load(t, replace(t, tc.old, tc.new))
			require.NoError(t, err)
			requireProblem(t, checkCompose(project, cmds), tc.want...)
		})
	}
}
