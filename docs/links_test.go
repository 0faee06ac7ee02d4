// Package docs_test checks the repository's documentation: every link in
// README.md and docs/*.md points inside the repository (a relative link), at
// a file or directory that exists, and at a heading that exists when it has
// an anchor (GitHub's anchors: lower case, punctuation dropped, spaces as
// hyphens, "-1", "-2" for repeated headings).
package docs_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"unicode"
)

// external lists the links out of the repository that are allowed, by file.
// docs/contract.md is the public contract and cites the specification that
// its webhook signatures follow.
var external = map[string][]string{
	"docs/contract.md": {"https://www.standardwebhooks.com"},
}

var (
	fence      = regexp.MustCompile("^\\s*(```|~~~)")
	codeSpan   = regexp.MustCompile("`+[^`]*`+")
	mdLink     = regexp.MustCompile(`!?\[[^\]]*\]\(\s*<?([^)\s>]*)>?(?:\s+"[^"]*")?\s*\)`)
	autoLink   = regexp.MustCompile(`<((?:https?|mailto|ftp):[^>\s]+)>`)
	bareURL    = regexp.MustCompile(`(?:^|[\s(])((?:https?|ftp)://[^\s)>\]]+)`)
	scheme     = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*:`)
	heading    = regexp.MustCompile(`^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$`)
	htmlAnchor = regexp.MustCompile(`<a\s+(?:name|id)="([^"]+)"`)
	linkText   = regexp.MustCompile(`\[([^\]]*)\]\([^)]*\)`)
)

type link struct {
	file   string // relative to the root, slash-separated
	line   int
	target string
}

// prose returns the lines of a Markdown file outside fenced code blocks,
// with inline code spans removed, keyed by line number (1-based).
func prose(text string) map[int]string {
	out := map[int]string{}
	inFence := false
	for i, l := range strings.Split(text, "\n") {
		if fence.MatchString(l) {
			inFence = !inFence
			continue
		}
		if !inFence {
			out[i+1] = l
		}
	}
	return out
}

// anchors returns the anchors GitHub makes for the headings of a Markdown file.
func anchors(text string) map[string]bool {
	seen := map[string]int{}
	out := map[string]bool{}
	lines := prose(text)
	nums := make([]int, 0, len(lines))
	for n := range lines {
		nums = append(nums, n)
	}
	sort.Ints(nums)
	for _, n := range nums {
		l := lines[n]
		for _, m := range htmlAnchor.FindAllStringSubmatch(l, -1) {
			out[m[1]] = true
		}
		m := heading.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		slug := slugify(m[2])
		if c := seen[slug]; c > 0 {
			out[fmt.Sprintf("%s-%d", slug, c)] = true
		} else {
			out[slug] = true
		}
		seen[slug]++
	}
	return out
}

// slugify is GitHub's heading anchor: the heading's text in lower case,
// letters, digits, spaces, hyphens and underscores kept, spaces as hyphens.
func slugify(h string) string {
	h = linkText.ReplaceAllString(h, "$1")
	h = strings.NewReplacer("`", "", "*", "").Replace(h)
	var b strings.Builder
	for _, r := range strings.ToLower(h) {
		switch {
		case unicode.IsLetter(r), unicode.IsDigit(r), r == '-', r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteRune('-')
		}
	}
	return b.String()
}

func links(file, text string) []link {
	var out []link
	for n, l := range prose(text) {
		l = codeSpan.ReplaceAllString(l, "")
		for _, m := range mdLink.FindAllStringSubmatch(l, -1) {
			out = append(out, link{file, n, m[1]})
		}
		for _, m := range autoLink.FindAllStringSubmatch(l, -1) {
			out = append(out, link{file, n, m[1]})
		}
		for _, m := range bareURL.FindAllStringSubmatch(mdLink.ReplaceAllString(l, ""), -1) {
			out = append(out, link{file, n, m[1]})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].line < out[j].line })
	return out
}

func TestLinksStayInsideTheRepository(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	files := []string{"README.md"}
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range docs {
		files = append(files, "docs/"+filepath.Base(d))
	}
	read := func(rel string) (string, error) {
		b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(rel)))
		return string(b), err
	}
	anchorsOf := map[string]map[string]bool{}
	checked := 0
	for _, file := range files {
		text, err := read(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range links(file, text) {
			checked++
			where := fmt.Sprintf("%s:%d: %q", l.file, l.line, l.target)
			if scheme.MatchString(l.target) {
				allowed := false
				for _, e := range external[file] {
					allowed = allowed || l.target == e
				}
				if !allowed {
					t.Errorf("%s points outside the repository", where)
				}
				continue
			}
			target, anchor, _ := strings.Cut(l.target, "#")
			rel := file
			if target != "" {
				if strings.HasPrefix(target, "/") {
					t.Errorf("%s: use a link relative to the file", where)
					continue
				}
				rel = filepath.ToSlash(filepath.Clean(filepath.Join(filepath.Dir(file), filepath.FromSlash(target))))
				if rel == ".." || strings.HasPrefix(rel, "../") {
					t.Errorf("%s leaves the repository", where)
					continue
				}
				if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(rel))); err != nil {
					t.Errorf("%s: no such file: %s", where, rel)
					continue
				}
			}
			if anchor == "" {
				continue
			}
			if !strings.HasSuffix(rel, ".md") {
				t.Errorf("%s: an anchor into %s, which is not Markdown", where, rel)
				continue
			}
			if anchorsOf[rel] == nil {
				text, err := read(rel)
				if err != nil {
					t.Fatal(err)
				}
				anchorsOf[rel] = anchors(text)
			}
			if !anchorsOf[rel][anchor] {
				t.Errorf("%s: no heading with anchor #%s in %s", where, anchor, rel)
			}
		}
	}
	t.Logf("%d links checked in %s", checked, strings.Join(files, ", "))
	if checked == 0 {
		t.Error("no links found: the parser is broken")
	}
}

func TestSlugify(t *testing.T) {
	for h, want := range map[string]string{
		"Providers (v1.1)": "providers-v11",
		"Single requests (v1.1, not implemented yet)":              "single-requests-v11-not-implemented-yet",
		"Performance (measured on the 2-core development machine)": "performance-measured-on-the-2-core-development-machine",
		"Operator queries over 100,000 jobs":                       "operator-queries-over-100000-jobs",
		"`batch.requests`":                                         "batchrequests",
		"The `batchfleet` command":                                 "the-batchfleet-command",
		"Streams, consumers and buckets":                           "streams-consumers-and-buckets",
		"Polling, vendor webhooks, timeouts, admission":            "polling-vendor-webhooks-timeouts-admission",
		"Warnings and audit (extensions)":                          "warnings-and-audit-extensions",
		"[Linked](x.md) heading":                                   "linked-heading",
		"batch_jobs record":                                        "batch_jobs-record",
	} {
		if got := slugify(h); got != want {
			t.Errorf("slugify(%q) = %q, want %q", h, got, want)
		}
	}
}
