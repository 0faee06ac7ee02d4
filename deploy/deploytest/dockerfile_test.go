package deploytest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// instruction is one Dockerfile instruction with its continuation lines joined.
type instruction struct {
	line int
	cmd  string // upper case: FROM, RUN, COPY, ...
	args string
}

func parseDockerfile(src string) []instruction {
	var out []instruction
	var cur strings.Builder
	start := 0
	sc := bufio.NewScanner(strings.NewReader(src))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if cur.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if cur.Len() > 0 && strings.HasPrefix(line, "#") {
			continue // comment inside a continued instruction
		}
		if cur.Len() == 0 {
			start = n
		}
		if body, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(body + " ")
			continue
		}
		cur.WriteString(line)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{line: start, cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)})
		cur.Reset()
	}
	return out
}

// checkDockerfile checks the image every service runs: a golang:1.26 build
// stage building all of cmd/* statically into /out, and a distroless nonroot
// final stage with the binaries in binDir.
func checkDockerfile(src string) problems {
	var p problems
	ins := parseDockerfile(src)
	args := map[string]string{} // global ARG defaults, for FROM
	var froms []instruction
	for _, in := range ins {
		switch in.cmd {
		case "ARG":
			if len(froms) == 0 {
				for _, a := range strings.Fields(in.args) {
					k, v, _ := strings.Cut(a, "=")
					args[k] = v
				}
			}
		case "FROM":
			froms = append(froms, in)
		}
	}
	if len(froms) < 2 {
		p.add("Dockerfile: want a multi-stage build (builder and final stage), got %d FROM", len(froms))
		return p
	}
	expand := func(s string) string {
		return os.Expand(s, func(k string) string { return args[k] })
	}
	fromImage := func(in instruction) (image, stage string) {
		var f []string
		for _, w := range strings.Fields(in.args) {
			if !strings.HasPrefix(w, "--") {
				f = append(f, w)
			}
		}
		if len(f) == 3 && strings.EqualFold(f[1], "AS") {
			return expand(f[0]), f[2]
		}
		if len(f) == 1 {
			return expand(f[0]), ""
		}
		p.add("Dockerfile:%d: cannot read FROM %q", in.line, in.args)
		return "", ""
	}
	buildImage, buildStage := fromImage(froms[0])
	if !strings.HasPrefix(buildImage, "golang:1.26") {
		p.add("Dockerfile:%d: build stage image is %q, want golang:1.26", froms[0].line, buildImage)
	}
	if buildStage == "" {
		p.add("Dockerfile:%d: build stage has no name (FROM ... AS build)", froms[0].line)
	}
	finalImage, _ := fromImage(froms[len(froms)-1])
	if finalImage != "gcr.io/distroless/static-debian12:nonroot" {
		p.add("Dockerfile:%d: final image is %q, want gcr.io/distroless/static-debian12:nonroot", froms[len(froms)-1].line, finalImage)
	}

	var build, copied, user, entrypoint bool
	stage := 0
	for _, in := range ins {
		if in.cmd == "FROM" {
			stage++
			continue
		}
		switch {
		case stage == 1 && in.cmd == "RUN" && strings.Contains(in.args, "go build"):
			build = true
			for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "./cmd/...", "-o /out/"} {
				if !strings.Contains(in.args, want) {
					p.add("Dockerfile:%d: go build lacks %q", in.line, want)
				}
			}
		case stage == len(froms) && in.cmd == "COPY":
			if strings.Contains(in.args, "--from="+buildStage) && strings.HasSuffix(in.args, "/out/ "+binDir) {
				copied = true
			}
		case stage == len(froms) && in.cmd == "USER":
			user = true
			if u, _, _ := strings.Cut(in.args, ":"); u == "root" || u == "0" {
				p.add("Dockerfile:%d: final stage runs as root", in.line)
			}
		case stage == len(froms) && in.cmd == "ENTRYPOINT":
			entrypoint = true
			var argv []string
			if err := json.Unmarshal([]byte(in.args), &argv); err != nil || len(argv) == 0 || !strings.HasPrefix(argv[0], binDir) {
				p.add("Dockerfile:%d: ENTRYPOINT %s: want exec form naming a binary in %s (distroless has no shell)", in.line, in.args, binDir)
			}
		}
	}
	if !build {
		p.add("Dockerfile: no `go build` in the build stage")
	}
	if !copied {
		p.add("Dockerfile: final stage does not COPY --from=%s /out/ %s", buildStage, binDir)
	}
	if !user {
		p.add("Dockerfile: final stage sets no USER")
	}
	if !entrypoint {
		p.add("Dockerfile: final stage has no ENTRYPOINT")
	}
	return p
}

func TestDockerfile(t *testing.T) {
	root := repoRoot(t)
	src, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	require.NoError(t, err)
	checkDockerfile(string(src)).report(t)
}

func TestDockerfileCheckFails(t *testing.T) {
	root := repoRoot(t)
	b, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	require.NoError(t, err)
	src := string(b)
	for _, tc := range []struct {
		name, old, new string
		want           []string
	}{
		{"cgo", "CGO_ENABLED=0 ", "", []string{"CGO_ENABLED=0"}},
		{"one binary", "./cmd/...", "./cmd/poller", []string{"./cmd/..."}},
		{"root", "USER 65532:65532", "USER root", []string{"runs as root"}},
		{"base", "static-debian12:nonroot", "static-debian12", []string{"final image"}},
		{"go version", "GO_VERSION=1.26", "GO_VERSION=1.22", []string{"golang:1.26"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Contains(t, src, tc.old)
			requireProblem(t, checkDockerfile(strings.Replace(src, tc.old, tc.new, 1)), tc.want...)
		})
	}
}

// ignoreRule is one .dockerignore line, compiled the way BuildKit reads it
// (github.com/moby/patternmatcher): the pattern is cleaned, "*" and "?" stay
// within a path element, "**" spans elements, a match on a directory
// excludes what is under it, and a later "!" line re-includes.
type ignoreRule struct {
	re      *regexp.Regexp
	exclude bool
	text    string
}

func parseDockerignore(src string) ([]ignoreRule, error) {
	var rules []ignoreRule
	for line := range strings.SplitSeq(src, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		r := ignoreRule{exclude: true, text: line}
		if rest, ok := strings.CutPrefix(line, "!"); ok {
			r.exclude, line = false, strings.TrimSpace(rest)
		}
		line = strings.TrimPrefix(path.Clean("/"+line), "/")
		var re strings.Builder
		re.WriteString("^")
		for i := 0; i < len(line); i++ {
			switch c := line[i]; {
			case strings.HasPrefix(line[i:], "**/"):
				re.WriteString("(.*/)?")
				i += 2
			case strings.HasPrefix(line[i:], "**"):
				re.WriteString(".*")
				i++
			case c == '*':
				re.WriteString("[^/]*")
			case c == '?':
				re.WriteString("[^/]")
			default:
				re.WriteString(regexp.QuoteMeta(string(c)))
			}
		}
		re.WriteString("$")
		var err error
		if r.re, err = regexp.Compile(re.String()); err != nil {
			return nil, err
		}
		rules = append(rules, r)
	}
	return rules, nil
}

// ignored reports whether file (slash-separated, relative to the context) is
// left out of the build context, and by which rule.
func ignored(rules []ignoreRule, file string) (bool, string) {
	out, by := false, ""
	for _, r := range rules {
		for p := file; p != "."; p = path.Dir(p) {
			if r.re.MatchString(p) {
				out, by = r.exclude, r.text
				break
			}
		}
	}
	return out, by
}

func TestIgnored(t *testing.T) {
	rules, err := parseDockerignore("**/testdata\n*.md\ndeploy\n**/*_test.go\nkeep*\n!keep/me.go\n")
	require.NoError(t, err)
	for file, want := range map[string]bool{
		"pkg/x/testdata/a.json": true,
		"testdata/a":            true,
		"README.md":             true,
		"pkg/README.md":         false,
		"deploy/k8s/a.yaml":     true,
		"pkg/deploy.go":         false,
		"pkg/a_test.go":         true,
		"pkg/a.go":              false,
		"keep/x.go":             true,
		"keep/me.go":            false,
		"go.mod":                false,
	} {
		got, _ := ignored(rules, file)
		require.Equal(t, want, got, file)
	}
}

// buildInputs lists the files `go build ./cmd/...` reads from the module, as
// the Dockerfile runs it (CGO_ENABLED=0, linux), relative to root.
func buildInputs(t *testing.T, root string) []string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	require.NoError(t, err, "the go command must be on PATH (https://go.dev/dl)")
	cmd := exec.Command(gobin, "list", "-deps", "-json=Dir,Module,GoFiles,EmbedFiles,CgoFiles", "./cmd/...")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOFLAGS=-mod=readonly")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "go list: %s", stderr.String())
	files := []string{"go.mod", "go.sum"}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var pkg struct {
			Dir                           string
			Module                        *struct{ Main bool }
			GoFiles, EmbedFiles, CgoFiles []string
		}
		if err := dec.Decode(&pkg); errors.Is(err, io.EOF) {
			break
		} else {
			require.NoError(t, err)
		}
		if pkg.Module == nil || !pkg.Module.Main {
			continue
		}
		rel, err := filepath.Rel(root, pkg.Dir)
		require.NoError(t, err)
		for _, f := range append(append(pkg.GoFiles, pkg.EmbedFiles...), pkg.CgoFiles...) {
			files = append(files, filepath.ToSlash(filepath.Join(rel, f)))
		}
	}
	require.Greater(t, len(files), 10)
	return files
}

func checkDockerignore(src string, inputs []string) problems {
	var p problems
	rules, err := parseDockerignore(src)
	if err != nil {
		p.add(".dockerignore: %v", err)
		return p
	}
	for _, f := range inputs {
		if out, by := ignored(rules, f); out {
			p.add(".dockerignore: %q leaves out %s, which `go build ./cmd/...` needs", by, f)
		}
	}
	// The context should not carry the repository's history or local state.
	for _, f := range []string{".git/HEAD", ".env", ".batchfleet-dev/x"} {
		if out, _ := ignored(rules, f); !out {
			p.add(".dockerignore: %s is sent to the build", f)
		}
	}
	return p
}

func TestDockerignore(t *testing.T) {
	root := repoRoot(t)
	src, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	require.NoError(t, err)
	inputs := buildInputs(t, root)
	checkDockerignore(string(src), inputs).report(t)

	t.Run("fails", func(t *testing.T) {
		requireProblem(t, checkDockerignore(string(src)+"\npkg/config\n", inputs), "pkg/config/config.go")
		requireProblem(t, checkDockerignore(string(src)+"\n*.sum\n", inputs), "go.sum")
		requireProblem(t, checkDockerignore(strings.ReplaceAll(string(src), ".git\n", ""), inputs), ".git/HEAD")
	})
}
