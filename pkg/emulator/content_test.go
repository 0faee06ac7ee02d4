package emulator

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/require"
)

func TestReadContent(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", maxBlock+maxBlock/2) // a line longer than a block
	var many strings.Builder
	for i := range 5_000 {
		many.WriteString(strings.Repeat("y", i%300) + "\n")
	}
	for _, tc := range []struct {
		name string
		data string
	}{
		{"empty", ""},
		{"one line", `{"a":1}`},
		{"many lines", many.String()},
		{"long line", "a\n" + long + "\nb\n" + long},
		{"no line end", long + long},
	} {
		t.Run(tc.name, func(t *testing.T) {
			size := int64(len(tc.data))
			for _, hint := range []int64{size + 300, -1} {
				short := iotest.OneByteReader(strings.NewReader(tc.data))
				if len(tc.data) > 64<<10 {
					short = iotest.HalfReader(strings.NewReader(tc.data)) // one byte at a time is slow
				}
				for _, r := range []io.Reader{strings.NewReader(tc.data), short} {
					c, tooLarge, err := readContent(r, hint, 1<<30)
					require.NoError(t, err)
					require.False(t, tooLarge)
					require.Equal(t, size, c.size)
					require.Equal(t, tc.data, string(c.bytes()))
					var waste int
					for i, b := range c.blocks {
						require.NotEmpty(t, b)
						if i < len(c.blocks)-1 {
							require.Equal(t, byte('\n'), b[len(b)-1], "block %d of %d must end a line", i, len(c.blocks))
						}
						waste += cap(b) - len(b)
					}
					if hint >= 0 {
						require.LessOrEqual(t, len(c.blocks), 1, "a known length is read into one block")
						require.LessOrEqual(t, waste, 301)
					}
				}
			}
		})
	}
}

func TestReadContentLimit(t *testing.T) {
	t.Parallel()
	data := bytes.Repeat([]byte("abc\n"), 2500)
	for _, hint := range []int64{-1, 100, 10_000, 20_000} {
		c, tooLarge, err := readContent(bytes.NewReader(data), hint, 10_000)
		require.NoError(t, err)
		require.False(t, tooLarge, "hint %d", hint)
		require.Equal(t, data, c.bytes())

		_, tooLarge, err = readContent(bytes.NewReader(append(data, 'x')), hint, 10_000)
		require.NoError(t, err)
		require.True(t, tooLarge, "hint %d", hint)
	}
	_, _, err := readContent(iotest.ErrReader(io.ErrUnexpectedEOF), -1, 10)
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
}

func TestContentWrite(t *testing.T) {
	t.Parallel()
	var c content
	var want bytes.Buffer
	line := []byte(strings.Repeat("z", 777) + "\n")
	for range 10_000 {
		_, _ = c.Write(line)
		want.Write(line)
	}
	c.trim()
	require.Equal(t, int64(want.Len()), c.size)
	require.Equal(t, want.Bytes(), c.bytes())
	var waste int
	for _, b := range c.blocks {
		require.LessOrEqual(t, cap(b), maxBlock)
		waste += cap(b) - len(b)
	}
	require.LessOrEqual(t, waste, want.Len()/8, "trim bounds the unused tail")
	var out bytes.Buffer
	require.NoError(t, c.writeTo(&out))
	require.Equal(t, want.Bytes(), out.Bytes())

	var small content
	_, _ = small.Write(line[:10])
	small.trim()
	require.Equal(t, 10, cap(small.blocks[0]), "a small file keeps no spare block")
}
