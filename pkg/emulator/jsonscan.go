package emulator

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The input parser reads request lines in place instead of decoding them
// into maps: it finds the members it needs as spans of the stored file, so
// a request costs the same memory whatever the size of its body. Every line
// passes json.Valid first, so the helpers below assume valid JSON and only
// skip over it; where a decoded value matters (strings, numbers) they
// decode that value alone, as encoding/json would.

// span locates a JSON value in a request line or an input file; the zero
// span means absent (no value can start a line).
type span struct{ start, end int }

func (s span) ok() bool { return s.end > 0 }

// shift moves a present span by off bytes.
func (s span) shift(off int64) span {
	if !s.ok() {
		return s
	}
	return span{s.start + int(off), s.end + int(off)}
}

// skipSpace returns the index of the first non-whitespace byte from i.
func skipSpace(data []byte, i int) int {
	for i < len(data) {
		switch data[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// skipString returns the index after the string opening at data[i].
func skipString(data []byte, i int) int {
	for i++; i < len(data); i++ {
		switch data[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return i
}

// skipValue returns the index after the value starting at data[i].
func skipValue(data []byte, i int) int {
	switch data[i] {
	case '"':
		return skipString(data, i)
	case '{', '[':
		depth := 0
		for i < len(data) {
			switch data[i] {
			case '"':
				i = skipString(data, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	}
	for i < len(data) { // number, true, false or null
		switch data[i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return i
		}
		i++
	}
	return i
}

// members calls fn with the decoded key and the value span of each member
// of the object opening at data[i], in order; a key repeats as often as the
// object repeats it. It returns the index after the object.
func members(data []byte, i int, fn func(key []byte, v span)) int {
	i = skipSpace(data, i+1)
	for i < len(data) && data[i] == '"' {
		end := skipString(data, i)
		key := data[i+1 : end-1]
		if bytes.IndexByte(key, '\\') >= 0 || !utf8.Valid(key) { // decoding unescapes and replaces bad UTF-8
			var s string
			_ = json.Unmarshal(data[i:end], &s)
			key = []byte(s)
		}
		start := skipSpace(data, skipSpace(data, end)+1) // past ':'
		v := span{start, skipValue(data, start)}
		fn(key, v)
		i = skipSpace(data, v.end)
		if i < len(data) && data[i] == ',' {
			i = skipSpace(data, i+1)
		}
	}
	return i + 1 // past '}'
}

// elements calls fn with the span of each element of the array opening at
// data[i] and returns the index after the array.
func elements(data []byte, i int, fn func(v span)) int {
	i = skipSpace(data, i+1)
	for i < len(data) && data[i] != ']' {
		v := span{i, skipValue(data, i)}
		fn(v)
		i = skipSpace(data, v.end)
		if i < len(data) && data[i] == ',' {
			i = skipSpace(data, i+1)
		}
	}
	return i + 1
}

func isNumberStart(c byte) bool { return c == '-' || c >= '0' && c <= '9' }

// numbersFit reports whether every number in the JSON value v fits a
// float64, which decoding it into an interface requires. Only an exponent
// or more than 300 characters can overflow, so only those are parsed.
func numbersFit(v []byte) bool {
	for i := 0; i < len(v); {
		switch c := v[i]; {
		case c == '"':
			i = skipString(v, i)
		case isNumberStart(c):
			end := skipValue(v, i)
			if num := v[i:end]; len(num) > 300 || bytes.ContainsAny(num, "eE") {
				if _, err := strconv.ParseFloat(string(num), 64); err != nil {
					return false
				}
			}
			i = end
		default:
			i++
		}
	}
	return true
}

// decodedLen is the length in bytes of the JSON string q once decoded.
func decodedLen(q []byte) int {
	if s := q[1 : len(q)-1]; bytes.IndexByte(s, '\\') < 0 && utf8.Valid(s) {
		return len(s)
	}
	var s string
	_ = json.Unmarshal(q, &s)
	return len(s)
}

// textLen counts the text of the JSON value at data[v.start:v.end]: the
// decoded bytes of its strings and 4 for a number (a token id), skipping
// the values of structural keys such as role and type. Like a decoded map,
// an object counts only the last value of a repeated key.
func textLen(data []byte, v span) int {
	switch c := data[v.start]; {
	case c == '"':
		return decodedLen(data[v.start:v.end])
	case isNumberStart(c):
		return 4
	case c == '[':
		n := 0
		elements(data, v.start, func(e span) { n += textLen(data, e) })
		return n
	case c == '{':
		var counted keyCounts
		members(data, v.start, func(key []byte, e span) {
			if !structuralKey(key) {
				counted.set(key, textLen(data, e))
			}
		})
		return counted.total()
	}
	return 0 // true, false, null
}

// structuralKey reports whether strings.ToLower(key) names a member
// without prompt text.
func structuralKey(key []byte) bool {
	var lower string
	if isASCII(key) {
		var buf [8]byte
		if len(key) > len(buf) {
			return false
		}
		for i, c := range key {
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			buf[i] = c
		}
		lower = string(buf[:len(key)])
	} else {
		lower = strings.ToLower(string(key))
	}
	switch lower {
	case "role", "type", "id", "detail", "name", "status", "format":
		return true
	}
	return false
}

func isASCII(b []byte) bool {
	for _, c := range b {
		if c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// keyCounts sums per-key counts where a repeated key replaces its earlier
// count. Objects in prompts have a handful of keys, searched in a slice; a
// map takes over past that.
type keyCounts struct {
	keys   [][]byte
	counts []int
	byKey  map[string]int
}

func (k *keyCounts) set(key []byte, n int) {
	if k.byKey != nil {
		k.byKey[string(key)] = n
		return
	}
	for i, seen := range k.keys {
		if bytes.Equal(seen, key) {
			k.counts[i] = n
			return
		}
	}
	if len(k.keys) < 16 {
		k.keys, k.counts = append(k.keys, key), append(k.counts, n)
		return
	}
	k.byKey = make(map[string]int, 2*len(k.keys))
	for i, seen := range k.keys {
		k.byKey[string(seen)] = k.counts[i]
	}
	k.byKey[string(key)] = n
}

func (k *keyCounts) total() int {
	n := 0
	if k.byKey != nil {
		for _, c := range k.byKey {
			n += c
		}
		return n
	}
	for _, c := range k.counts {
		n += c
	}
	return n
}
