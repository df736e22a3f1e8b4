package bench

import (
	"fmt"
	"html"
	"io"
	"math"
	"strings"
	"time"
)

// series is one line of the plot.
type series struct {
	label  string
	sorted []time.Duration
}

var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"}

// WriteSVG plots the latency distribution of the hello workload: one
// cumulative distribution per concurrency level, on a logarithmic time axis.
// It writes a plot with no lines (and says so) when no hello result has
// latencies.
func (r *Report) WriteSVG(w io.Writer) error {
	var ss []series
	for _, res := range r.Results {
		if res.Workload == WorkloadHello && len(res.lat) > 0 {
			label := fmt.Sprintf("%s, %s sync: p50 %s ms, p99 %s ms (n=%d)", res.Case, shortDurability(res.Durability), num(res.P50Ms), num(res.P99Ms), len(res.lat))
			ss = append(ss, series{label: label, sorted: res.lat})
		}
	}
	title := fmt.Sprintf("E1_HelloSequence start-to-completion latency, CDF (workers: %d, %s/%s, %d CPU)", r.Meta.Workers, r.Meta.GOOS, r.Meta.GOARCH, r.Meta.NumCPU)
	_, err := io.WriteString(w, plotCDF(title, ss))
	return err
}

// plotCDF draws cumulative distributions of latencies on a log x axis.
func plotCDF(title string, ss []series) string {
	const (
		width, height        = 900.0, 560.0
		left, right, top, bo = 70.0, 20.0, 40.0, 60.0
	)
	legendH := 18.0 * float64(len(ss))
	plotTop := top + legendH
	pw, ph := width-left-right, height-plotTop-bo

	lo, hi := math.Inf(1), math.Inf(-1)
	for _, s := range ss {
		lo = math.Min(lo, math.Max(ms(s.sorted[0]), 0.001))
		hi = math.Max(hi, math.Max(ms(s.sorted[len(s.sorted)-1]), 0.001))
	}
	if len(ss) == 0 {
		lo, hi = 1, 1000
	}
	d0 := math.Floor(math.Log10(lo))
	d1 := math.Ceil(math.Log10(hi))
	if d1 <= d0 {
		d1 = d0 + 1
	}
	x := func(v float64) float64 {
		v = math.Max(v, math.Pow(10, d0))
		return left + (math.Log10(v)-d0)/(d1-d0)*pw
	}
	y := func(f float64) float64 { return plotTop + (1-f)*ph }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%.1f" y="22" font-size="15" font-weight="bold">%s</text>`+"\n", left, html.EscapeString(title))

	// Grid and ticks: 1, 2 and 5 per decade on x; tenths on y.
	for d := d0; d <= d1; d++ {
		for _, m := range []float64{1, 2, 5} {
			v := m * math.Pow(10, d)
			if math.Log10(v) > d1+1e-9 {
				break
			}
			px := x(v)
			stroke := "#eee"
			if m == 1 {
				stroke = "#ccc"
			}
			fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s"/>`+"\n", px, plotTop, px, plotTop+ph, stroke)
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", px, plotTop+ph+16, tickLabel(v))
		}
	}
	for i := 0; i <= 10; i++ {
		f := float64(i) / 10
		py := y(f)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#eee"/>`+"\n", left, py, left+pw, py)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="end">%.1f</text>`+"\n", left-6, py+4, f)
	}
	for _, q := range []float64{0.5, 0.99} {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#999" stroke-dasharray="4 4"/>`+"\n", left, y(q), left+pw, y(q))
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" fill="#666">p%.0f</text>`+"\n", left+pw-28, y(q)-4, q*100)
	}
	fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#333"/>`+"\n", left, plotTop, pw, ph)
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">latency, ms (log scale)</text>`+"\n", left+pw/2, height-18)
	fmt.Fprintf(&b, `<text transform="translate(18 %.1f) rotate(-90)" text-anchor="middle">fraction of orchestrations completed within</text>`+"\n", plotTop+ph/2)

	for i, s := range ss {
		color := palette[i%len(palette)]
		ly := top + 18*float64(i)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2.5"/>`+"\n", left, ly-4, left+24, ly-4, color)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f">%s</text>`+"\n", left+30, ly, html.EscapeString(s.label))
		// A step function, thinned to at most about 600 points.
		n := len(s.sorted)
		stride := max(1, n/600)
		var pts strings.Builder
		fmt.Fprintf(&pts, "%.1f,%.1f", x(ms(s.sorted[0])), y(0))
		for j := 0; j < n; j += stride {
			px := x(ms(s.sorted[j]))
			fmt.Fprintf(&pts, " %.1f,%.1f %.1f,%.1f", px, y(float64(j)/float64(n)), px, y(float64(j+1)/float64(n)))
		}
		fmt.Fprintf(&pts, " %.1f,%.1f", x(ms(s.sorted[n-1])), y(1))
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", color, pts.String())
	}
	if len(ss) == 0 {
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#666">no hello results</text>`+"\n", left+pw/2, plotTop+ph/2)
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func tickLabel(v float64) string {
	if v >= 1 {
		return fmt.Sprintf("%g", v)
	}
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.3f", v), "0"), ".")
}
