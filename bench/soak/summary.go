package soak

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"time"
)

// Windows are the spans of the run that the summary compares.
type Windows struct {
	// The trend test compares the peak of [TrendFrom, TrendFrom +
	// TrendLength) with the peak of the run's last TrendLength; it is made
	// only when the run lasts at least TrendFrom + 2*TrendLength, so that
	// the two do not overlap. The defaults, 15 minutes each, are the
	// issue's: after the first 15 minutes, the last 15 minutes' peak
	// within 20% (TrendLimit) of the peak of minutes 15-30.
	TrendFrom   time.Duration
	TrendLength time.Duration
}

// Limits of the verdicts.
const (
	// TrendLimit is the highest ratio of the last window's peak to the
	// earlier one's that is still no upward trend.
	TrendLimit = 1.20
	// LevelLimit is the highest ratio of a disk's max over the last
	// quarter of the run to its max over the third quarter that is still
	// levelled off.
	LevelLimit = 1.10
)

func (w Windows) withDefaults() Windows {
	if w.TrendFrom == 0 {
		w.TrendFrom = 15 * time.Minute
	}
	if w.TrendLength == 0 {
		w.TrendLength = 15 * time.Minute
	}
	return w
}

// Series is one column of a run's CSV: Values[i] was sampled at
// Elapsed[i] seconds, NaN where it is missing.
type Series struct {
	Name    string
	Elapsed []float64
	Values  []float64
}

// ReadCSV reads the series a run wrote.
func ReadCSV(r io.Reader) ([]Series, error) {
	rows, err := csv.NewReader(r).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("reading the samples: %w", err)
	}
	if len(rows) == 0 || len(rows[0]) == 0 || rows[0][0] != "elapsed_s" {
		return nil, errors.New("reading the samples: no elapsed_s header")
	}
	series := make([]Series, len(rows[0])-1)
	for j := range series {
		series[j].Name = rows[0][j+1]
	}
	for n, row := range rows[1:] {
		elapsed, err := strconv.ParseFloat(row[0], 64)
		if err != nil {
			return nil, fmt.Errorf("reading the samples: row %d: %w", n+2, err)
		}
		for j := range series {
			v := math.NaN()
			if cell := row[j+1]; cell != "" {
				if v, err = strconv.ParseFloat(cell, 64); err != nil {
					return nil, fmt.Errorf("reading the samples: row %d, %s: %w", n+2, series[j].Name, err)
				}
			}
			series[j].Elapsed = append(series[j].Elapsed, elapsed)
			series[j].Values = append(series[j].Values, v)
		}
	}
	return series, nil
}

// Line is the summary of one series. The values are NaN when no sample was
// taken; Trend is nil when the run is too short, Level nil but for disks.
type Line struct {
	Name                  string
	Samples, Missing      int
	First, Min, Max, Last float64
	Trend, Level          *Compare
}

// Compare is the peak of a later span of a series against an earlier one.
type Compare struct {
	Before, After float64
	Ratio         float64 // After / Before; +Inf when only Before is 0
	OK            bool    // Ratio within its limit
}

// Summary is a run's summary.
type Summary struct {
	Lasted  time.Duration // to the last sample
	Windows Windows
	Lines   []Line
	// Overhead is the most ClickHouse's data dir exceeded twice its live
	// data (the constant c in dir <= 2 * live + c) over the samples of
	// both, in MiB; NaN without them.
	Overhead float64
}

// Summarize reads a run's CSV and computes its summary.
func Summarize(r io.Reader, w Windows) (Summary, error) {
	series, err := ReadCSV(r)
	if err != nil {
		return Summary{}, err
	}
	w = w.withDefaults()
	s := Summary{Windows: w, Overhead: math.NaN()}
	if len(series) == 0 || len(series[0].Elapsed) == 0 {
		return s, nil
	}
	end := series[0].Elapsed[len(series[0].Elapsed)-1]
	s.Lasted = time.Duration(end * float64(time.Second))
	from, length := w.TrendFrom.Seconds(), w.TrendLength.Seconds()
	var dir, live *Series
	for i, se := range series {
		l := Line{Name: se.Name, Samples: len(se.Values), First: math.NaN(), Last: math.NaN()}
		l.Min, l.Max = math.Inf(1), math.Inf(-1)
		for _, v := range se.Values {
			if math.IsNaN(v) {
				l.Missing++
				continue
			}
			if math.IsNaN(l.First) {
				l.First = v
			}
			l.Last = v
			l.Min, l.Max = min(l.Min, v), max(l.Max, v)
		}
		if l.Missing == l.Samples {
			l.Min, l.Max = math.NaN(), math.NaN()
		}
		if end >= from+2*length {
			l.Trend = compare(se, from, from+length, end-length, end, TrendLimit)
		}
		if strings.HasPrefix(se.Name, "disk_") {
			l.Level = compare(se, end/2, end*3/4, end*3/4, end, LevelLimit)
		}
		s.Lines = append(s.Lines, l)
		switch se.Name {
		case "disk_" + ClickHouseDir + "_mib":
			dir = &series[i]
		case "ch_active_mib":
			live = &series[i]
		}
	}
	if dir != nil && live != nil {
		for i, d := range dir.Values {
			s.Overhead = peak(s.Overhead, d-2*live.Values[i])
		}
	}
	return s, nil
}

// compare compares the peak of se over [a0, a1) with its peak over
// [b0, b1]; nil when a span has no sample.
func compare(se Series, a0, a1, b0, b1, limit float64) *Compare {
	before, after := math.NaN(), math.NaN()
	for i, e := range se.Elapsed {
		v := se.Values[i]
		if e >= a0 && e < a1 {
			before = peak(before, v)
		}
		if e >= b0 && e <= b1 {
			after = peak(after, v)
		}
	}
	if math.IsNaN(before) || math.IsNaN(after) {
		return nil
	}
	c := &Compare{Before: before, After: after, Ratio: after / before}
	if before == 0 && after == 0 {
		c.Ratio = 1
	}
	c.OK = c.Ratio <= limit // false for NaN and +Inf
	return c
}

// peak is the larger of cur and v, where NaN is no value.
func peak(cur, v float64) float64 {
	if math.IsNaN(cur) || v > cur {
		return v
	}
	return cur
}

// Print writes the summary, one line per series.
func (s Summary) Print(w io.Writer) error {
	f := func(v float64) string {
		if math.IsNaN(v) {
			return "-"
		}
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "soak summary: %s sampled\n", s.Lasted.Round(time.Second))
	if need := s.Windows.TrendFrom + 2*s.Windows.TrendLength; s.Lasted < need {
		fmt.Fprintf(&b, "(no trend test: it needs a run of at least %s, the trend window's start plus twice its length)\n", need)
	}
	for _, l := range s.Lines {
		fmt.Fprintf(&b, "%-24s first %s  min %s  max %s  last %s  (%d samples, %d missing)",
			l.Name, f(l.First), f(l.Min), f(l.Max), f(l.Last), l.Samples, l.Missing)
		if c := l.Trend; c != nil {
			verdict := "no upward trend"
			if !c.OK {
				verdict = fmt.Sprintf("UPWARD TREND (over x%.2f)", TrendLimit)
			}
			fmt.Fprintf(&b, "; peak of %s-%s %s, of the last %s %s: x%.2f, %s", s.Windows.TrendFrom, s.Windows.TrendFrom+s.Windows.TrendLength,
				f(c.Before), s.Windows.TrendLength, f(c.After), c.Ratio, verdict)
		}
		if c := l.Level; c != nil {
			verdict := "levelled off"
			if !c.OK {
				verdict = fmt.Sprintf("STILL GROWING (over x%.2f)", LevelLimit)
			}
			fmt.Fprintf(&b, "; max of the 3rd quarter %s, of the 4th %s: x%.2f, %s", f(c.Before), f(c.After), c.Ratio, verdict)
		}
		b.WriteString("\n")
	}
	if !math.IsNaN(s.Overhead) {
		fmt.Fprintf(&b, "ClickHouse's data dir <= 2 x its live data + %s MiB at every sample\n", f(s.Overhead))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// SummarizeFile prints the summary of the CSV at path to w.
func SummarizeFile(path string, windows Windows, w io.Writer) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("soak: %w", err)
	}
	defer f.Close()
	s, err := Summarize(f, windows)
	if err != nil {
		return fmt.Errorf("soak: %s: %w", path, err)
	}
	return s.Print(w)
}
