package load

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"html/template"
	"image/color"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// Chart is one PNG chart of a report.
type Chart struct {
	Name  string
	Title string
	PNG   []byte
}

// Charts draws the report's charts: latency over time, throughput over
// time, and latency by percentile.
func Charts(rep *Report) ([]Chart, error) {
	var out []Chart
	add := func(name, title string, p *plot.Plot) error {
		w, err := p.WriterTo(8*vg.Inch, 3.5*vg.Inch, "png")
		if err != nil {
			return err
		}
		var b bytes.Buffer
		if _, err := w.WriteTo(&b); err != nil {
			return err
		}
		out = append(out, Chart{Name: name, Title: title, PNG: b.Bytes()})
		return nil
	}
	series := func(f func(Point) float64) plotter.XYs {
		xy := make(plotter.XYs, len(rep.Timeline))
		for i, pt := range rep.Timeline {
			xy[i] = plotter.XY{X: float64(pt.Second), Y: f(pt)}
		}
		return xy
	}

	lat := newPlot("Latency over time", "second", "ms")
	if err := lines(lat, []string{"TTFT p50", "TTFT p99", "E2E p50", "E2E p99"},
		series(func(p Point) float64 { return p.TTFTP50 }), series(func(p Point) float64 { return p.TTFTP99 }),
		series(func(p Point) float64 { return p.E2EP50 }), series(func(p Point) float64 { return p.E2EP99 })); err != nil {
		return nil, err
	}
	if err := add("latency", "Latency over time", lat); err != nil {
		return nil, err
	}

	thr := newPlot("Throughput over time", "second", "per second")
	if err := lines(thr, []string{"sent", "completed", "errors", "output tokens / 10"},
		series(func(p Point) float64 { return float64(p.Sent) }), series(func(p Point) float64 { return float64(p.Completed) }),
		series(func(p Point) float64 { return float64(p.Errors) }), series(func(p Point) float64 { return float64(p.Tokens) / 10 })); err != nil {
		return nil, err
	}
	if err := add("throughput", "Throughput over time", thr); err != nil {
		return nil, err
	}

	pct := newPlot("Latency by percentile", "percentile", "ms")
	qs := []float64{50, 90, 99, 99.9}
	curve := func(m string) plotter.XYs {
		p := rep.Latency[m]
		v := []float64{p.P50, p.P90, p.P99, p.P999}
		xy := make(plotter.XYs, len(qs))
		for i := range qs {
			xy[i] = plotter.XY{X: float64(i), Y: v[i]}
		}
		return xy
	}
	pct.NominalX("p50", "p90", "p99", "p99.9")
	if err := lines(pct, []string{"TTFT", "ITL", "TPOT", "E2E"}, curve("ttft"), curve("itl"), curve("tpot"), curve("e2e")); err != nil {
		return nil, err
	}
	if err := add("percentiles", "Latency by percentile", pct); err != nil {
		return nil, err
	}
	return out, nil
}

func newPlot(title, x, y string) *plot.Plot {
	p := plot.New()
	p.Title.Text, p.X.Label.Text, p.Y.Label.Text = title, x, y
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	return p
}

var palette = []color.Color{
	color.RGBA{R: 31, G: 119, B: 180, A: 255}, color.RGBA{R: 214, G: 39, B: 40, A: 255},
	color.RGBA{R: 44, G: 160, B: 44, A: 255}, color.RGBA{R: 148, G: 103, B: 189, A: 255},
}

func lines(p *plot.Plot, names []string, data ...plotter.XYs) error {
	for i, xy := range data {
		if len(xy) == 0 {
			continue
		}
		l, err := plotter.NewLine(xy)
		if err != nil {
			return fmt.Errorf("chart %q: %w", names[i], err)
		}
		l.Color = palette[i%len(palette)]
		l.Width = vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(names[i], l)
	}
	return nil
}

var page = template.Must(template.New("report").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>autoglm-load: {{.R.Target}}</title>
<style>body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:.3em .7em;text-align:right}th{background:#f3f3f3}.warn{color:#b00}</style></head>
<body>
<h1>autoglm-load report</h1>
<p>{{.R.Model}} model against <code>{{.R.Target}}</code>, started {{.R.Started.Format "2006-01-02 15:04:05 MST"}}, {{printf "%.1f" .R.Seconds}} s.</p>
{{range .R.Warnings}}<p class="warn">warning: {{.}}</p>{{end}}
<table>
<tr><th>requests</th><th>ok</th><th>errors</th><th>dropped</th><th>offered req/s</th><th>sent req/s</th><th>achieved req/s</th><th>goodput req/s</th><th>output tokens/s</th></tr>
<tr><td>{{.R.Requests}}</td><td>{{.R.OK}}</td><td>{{.Errors}}</td><td>{{.R.Dropped}}</td><td>{{printf "%.2f" .R.Offered}}</td><td>{{printf "%.2f" .R.Sent}}</td><td>{{printf "%.2f" .R.Achieved}}</td><td>{{printf "%.2f" .R.Goodput}}</td><td>{{printf "%.1f" .R.TokensPerSecond}}</td></tr>
</table>
<table>
<tr><th>latency (ms)</th><th>count</th><th>mean</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>
{{range .Rows}}<tr><th>{{.Name}}</th><td>{{.P.Count}}</td><td>{{printf "%.2f" .P.Mean}}</td><td>{{printf "%.2f" .P.P50}}</td><td>{{printf "%.2f" .P.P90}}</td><td>{{printf "%.2f" .P.P99}}</td><td>{{printf "%.2f" .P.P999}}</td><td>{{printf "%.2f" .P.Max}}</td></tr>
{{end}}</table>
{{range .Charts}}<h2>{{.Title}}</h2><img alt="{{.Title}}" src="data:image/png;base64,{{.Data}}">
{{end}}
</body></html>
`))

// WriteHTML writes rep as an HTML page with the charts inlined, and each
// chart as PNG next to it (report.html → report-latency.png, …).
func WriteHTML(path string, rep *Report) error {
	charts, err := Charts(rep)
	if err != nil {
		return err
	}
	type row struct {
		Name string
		P    Percentiles
	}
	type chart struct{ Title, Data string }
	v := struct {
		R      *Report
		Errors string
		Rows   []row
		Charts []chart
	}{R: rep}
	var errs []string
	for k, n := range rep.Errors {
		errs = append(errs, fmt.Sprintf("%s: %d", k, n))
	}
	sort.Strings(errs)
	v.Errors = strings.Join(errs, ", ")
	if v.Errors == "" {
		v.Errors = "0"
	}
	for _, m := range []string{"ttft", "itl", "tpot", "e2e", "lag"} {
		v.Rows = append(v.Rows, row{Name: m, P: rep.Latency[m]})
	}
	base := strings.TrimSuffix(path, filepath.Ext(path))
	for _, c := range charts {
		v.Charts = append(v.Charts, chart{Title: c.Title, Data: base64.StdEncoding.EncodeToString(c.PNG)})
		if err := os.WriteFile(base+"-"+c.Name+".png", c.PNG, 0o644); err != nil {
			return err
		}
	}
	var b bytes.Buffer
	if err := page.Execute(&b, v); err != nil {
		return err
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}
