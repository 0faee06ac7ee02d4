// Package benchfmt prints the benchmarks' figures as markdown tables, the
// form the README and docs/performance.md quote them in.
package benchfmt

import "strings"

// Table is a markdown table: a header row and rows of cells (a short row
// is padded with empty cells).
type Table struct {
	Header []string
	Rows   [][]string
}

// Add appends a row.
func (t *Table) Add(cells ...string) { t.Rows = append(t.Rows, cells) }

// String renders the table, one line per row.
func (t *Table) String() string {
	var sb strings.Builder
	line := func(cells []string) {
		sb.WriteString("|")
		for i := range t.Header {
			c := ""
			if i < len(cells) {
				c = cells[i]
			}
			sb.WriteString(" " + c + " |")
		}
		sb.WriteString("\n")
	}
	line(t.Header)
	sep := make([]string, len(t.Header))
	for i := range sep {
		sep[i] = "---"
	}
	line(sep)
	for _, r := range t.Rows {
		line(r)
	}
	return sb.String()
}
