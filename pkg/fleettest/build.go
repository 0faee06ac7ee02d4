package fleettest

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// builds caches BuildBinary results for the life of the test process.
var builds struct {
	mu  sync.Mutex
	dir string                 // shared output dir, made on first build
	m   map[string]*buildEntry // by import path
}

type buildEntry struct {
	once sync.Once
	path string
	err  error
}

// BuildBinary builds the main package pkg of this module with plain
// `go build` and returns the binary's path. pkg is relative to the module
// root ("cmd/poller") or a full import path. Each package is built once per
// test process, also when tests run in parallel; the binaries live in a
// shared temporary directory that CleanupBinaries removes (VerifyTestMain
// calls it).
func BuildBinary(t testing.TB, pkg string) string {
	t.Helper()
	root, modPath, err := moduleRoot()
	if err != nil {
		t.Fatalf("BuildBinary %s: %v", pkg, err)
	}
	importPath := strings.TrimSuffix(strings.TrimPrefix(pkg, "./"), "/")
	if importPath != modPath && !strings.HasPrefix(importPath, modPath+"/") {
		importPath = modPath + "/" + importPath
	}

	builds.mu.Lock()
	if builds.m == nil {
		builds.m = map[string]*buildEntry{}
	}
	if builds.dir == "" {
		dir, err := os.MkdirTemp("", "batchfleet-bin-")
		if err != nil {
			builds.mu.Unlock()
			t.Fatalf("BuildBinary %s: %v", pkg, err)
		}
		builds.dir = dir
	}
	e := builds.m[importPath]
	if e == nil {
		e = &buildEntry{}
		builds.m[importPath] = e
	}
	dir := builds.dir
	builds.mu.Unlock()

	e.once.Do(func() {
		// The binary keeps the package's base name (it shows in ps and logs),
		// in a directory named by the whole path so cmd/a/server and
		// cmd/b/server do not collide.
		sub := filepath.Join(dir, strings.ReplaceAll(importPath, "/", "_"))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			e.err = fmt.Errorf("build %s: %w", importPath, err)
			return
		}
		out := filepath.Join(sub, path.Base(importPath))
		args := []string{"build", "-o", out}
		if raceEnabled {
			args = append(args, "-race")
		}
		cmd := exec.Command(goTool(), append(args, importPath)...)
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			e.err = fmt.Errorf("go build %s: %w\n%s", importPath, err, b)
			return
		}
		e.path = out
	})
	if e.err != nil {
		t.Fatalf("BuildBinary: %v", e.err)
	}
	return e.path
}

// CleanupBinaries removes every binary BuildBinary built and forgets them.
// Call it from TestMain after m.Run (VerifyTestMain does).
func CleanupBinaries() {
	builds.mu.Lock()
	defer builds.mu.Unlock()
	if builds.dir != "" {
		_ = os.RemoveAll(builds.dir)
	}
	builds.dir = ""
	builds.m = nil
}

var modInfo struct {
	once          sync.Once
	root, modPath string
	err           error
}

// moduleRoot finds the main module's directory and path with `go env GOMOD`.
func moduleRoot() (root, modPath string, err error) {
	modInfo.once.Do(func() {
		out, err := exec.Command(goTool(), "env", "GOMOD").Output()
		if err != nil {
			modInfo.err = fmt.Errorf("go env GOMOD: %w", err)
			return
		}
		gomod := strings.TrimSpace(string(out))
		if gomod == "" || gomod == os.DevNull {
			modInfo.err = fmt.Errorf("go env GOMOD: not inside a module")
			return
		}
		data, err := os.ReadFile(gomod)
		if err != nil {
			modInfo.err = fmt.Errorf("read go.mod: %w", err)
			return
		}
		modInfo.root = filepath.Dir(gomod)
		modInfo.modPath, modInfo.err = parseModulePath(data)
	})
	return modInfo.root, modInfo.modPath, modInfo.err
}

// parseModulePath returns the path on go.mod's module line.
func parseModulePath(gomod []byte) (string, error) {
	s := bufio.NewScanner(bytes.NewReader(gomod))
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if rest, ok := strings.CutPrefix(line, "module"); ok && (rest == "" || rest[0] == ' ' || rest[0] == '\t') {
			p := strings.Trim(strings.TrimSpace(rest), `"`)
			if p != "" {
				return p, nil
			}
		}
	}
	return "", fmt.Errorf("go.mod: no module line")
}

// goTool is the go command: the one on PATH (go test puts its own first),
// else $GOROOT/bin/go.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	if root := os.Getenv("GOROOT"); root != "" {
		return filepath.Join(root, "bin", "go")
	}
	return "go"
}
