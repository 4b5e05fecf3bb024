// Command chart reads the raw output of the benchmarks in this module (go
// test -bench, any -count) and draws one chart of the median ns/op of each
// implementation in each shape, ringbus highlighted: a panel per benchmark
// family (queues, dispatch, the deterministic path), grouped bars, a
// logarithmic axis where the values of a panel span more than a factor of
// logAbove. With -ratios it also writes the medians and each competitor's
// ratio to ringbus as Markdown tables.
//
//	go run ./cmd/chart -in results.txt -out ../docs/benchmarks.svg -ratios ratios.md
//
// The output format follows -out's extension: .svg, .png or .pdf.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	xfont "golang.org/x/image/font"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgpdf"
	"gonum.org/v1/plot/vg/vgsvg"
)

// highlighted are the implementations the chart is about: ringbus, and
// ringbus behind another library's interface (watermillbus). The first of
// them in a family is the base of its ratios.
var highlighted = []string{"ringbus", "watermillbus"}

func isHighlighted(impl string) bool { return slices.Contains(highlighted, impl) }

// base returns the implementation a family's ratios are relative to.
func (f *family) base() (string, bool) {
	for _, impl := range f.impls {
		if isHighlighted(impl) {
			return impl, true
		}
	}
	return "", false
}

// logAbove is the spread (largest over smallest median) above which a
// panel's axis is logarithmic.
const logAbove = 20

// families are the benchmark families, in the order of the panels, with
// their titles. A family missing from the input is skipped; one not listed
// here gets a panel titled with its name, after these.
var families = []struct{ name, title string }{
	{"Queue", "Queues: ns per item pushed and popped (capacity 1024, pointer items)"},
	{"Dispatch", "Dispatch: ns per event, publish until every handler ran (2 workers where configurable)"},
	{"EmitDrain", "Deterministic path: ns per event, Emit+Drain against calling the handlers directly"},
	{"Watermill", "Through watermill's interfaces: ns per message, watermillbus (ringbus) against gochannel"},
}

var (
	highlightColor = color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}
	// otherColors are muted, so that ringbus stands out, and distinct
	// from each other.
	otherColors = []color.Color{
		color.RGBA{R: 0x6f, G: 0x8f, B: 0xb8, A: 0xff}, // steel blue
		color.RGBA{R: 0xa8, G: 0xa8, B: 0xa8, A: 0xff}, // grey
		color.RGBA{R: 0xc2, G: 0xa8, B: 0x6b, A: 0xff}, // khaki
		color.RGBA{R: 0x84, G: 0xb0, B: 0x8a, A: 0xff}, // sage
		color.RGBA{R: 0xa4, G: 0x8c, B: 0xbf, A: 0xff}, // lavender
	}
)

func main() {
	in := flag.String("in", "results.txt", "raw `file` of go test -bench output")
	out := flag.String("out", "../docs/benchmarks.svg", "chart `file` to write: .svg, .png or .pdf")
	ratios := flag.String("ratios", "", "also write the medians and ratios to ringbus as Markdown to `file` (- for stdout)")
	caption := flag.String("caption", "", "`text` under the chart: the machine, the date, the command")
	flag.Parse()
	if err := run(*in, *out, *ratios, *caption); err != nil {
		fmt.Fprintln(os.Stderr, "chart:", err)
		os.Exit(1)
	}
}

func run(in, out, ratios, caption string) error {
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	fams, err := parse(f)
	f.Close()
	if err != nil {
		return err
	}
	if len(fams) == 0 {
		return fmt.Errorf("%s: no benchmark results", in)
	}
	if err := draw1(fams, out, caption); err != nil {
		return err
	}
	if ratios == "" {
		return nil
	}
	if ratios == "-" {
		return writeRatios(os.Stdout, fams)
	}
	rf, err := os.Create(ratios)
	if err != nil {
		return err
	}
	if err := writeRatios(rf, fams); err != nil {
		rf.Close()
		return err
	}
	return rf.Close()
}

// family is one benchmark function's results: its shapes (rows) and
// implementations (columns), in the order first seen, and every ns/op of
// each (shape, impl).
type family struct {
	name   string
	shapes []string
	impls  []string
	ns     map[[2]string][]float64 // [shape, impl] -> ns/op of each run
}

func (f *family) median(shape, impl string) (float64, bool) {
	v := slices.Clone(f.ns[[2]string{shape, impl}])
	if len(v) == 0 {
		return 0, false
	}
	slices.Sort(v)
	m := len(v) / 2
	if len(v)%2 == 1 {
		return v[m], true
	}
	return (v[m-1] + v[m]) / 2, true
}

// benchLine matches a result line: name, iterations, then value-unit pairs.
var benchLine = regexp.MustCompile(`^Benchmark(\S+)\s+\d+\s+(.*)$`)

// procsSuffix is the -GOMAXPROCS suffix go test adds to a name.
var procsSuffix = regexp.MustCompile(`-\d+$`)

// parse reads go test -bench output. A name is Family/key=value/...; the
// key impl names the implementation and the other keys the shape.
func parse(r io.Reader) ([]*family, error) {
	byName := map[string]*family{}
	var order []*family
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		m := benchLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		ns, ok := nsPerOp(m[2])
		if !ok {
			continue
		}
		parts := strings.Split(procsSuffix.ReplaceAllString(m[1], ""), "/")
		var shape []string
		impl := ""
		for _, p := range parts[1:] {
			if v, ok := strings.CutPrefix(p, "impl="); ok {
				impl = v
			} else {
				shape = append(shape, p)
			}
		}
		if impl == "" {
			continue // not one of ours
		}
		f := byName[parts[0]]
		if f == nil {
			f = &family{name: parts[0], ns: map[[2]string][]float64{}}
			byName[parts[0]] = f
			order = append(order, f)
		}
		s := strings.Join(shape, "/")
		if !slices.Contains(f.shapes, s) {
			f.shapes = append(f.shapes, s)
		}
		if !slices.Contains(f.impls, impl) {
			f.impls = append(f.impls, impl)
		}
		f.ns[[2]string{s, impl}] = append(f.ns[[2]string{s, impl}], ns)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	// Panels in the order of families, unknown ones after.
	rank := func(f *family) int {
		for i, x := range families {
			if x.name == f.name {
				return i
			}
		}
		return len(families)
	}
	slices.SortStableFunc(order, func(a, b *family) int { return rank(a) - rank(b) })
	return order, nil
}

// nsPerOp finds the ns/op value among a result line's value-unit pairs.
func nsPerOp(fields string) (float64, bool) {
	fs := strings.Fields(fields)
	for i := 0; i+1 < len(fs); i += 2 {
		if fs[i+1] == "ns/op" {
			v, err := strconv.ParseFloat(fs[i], 64)
			return v, err == nil
		}
	}
	return 0, false
}

// label turns a shape (key=value/...) into an axis label.
func label(shape string) string {
	kv := map[string]string{}
	var keys []string
	for _, p := range strings.Split(shape, "/") {
		k, v, _ := strings.Cut(p, "=")
		kv[k] = v
		keys = append(keys, k)
	}
	switch {
	case kv["shape"] != "" && kv["producers"] != "":
		if kv["shape"] == "uncontended" || kv["shape"] == "SPSC" {
			return kv["shape"]
		}
		return fmt.Sprintf("%s %s:%s", kv["shape"], kv["producers"], kv["consumers"])
	case kv["subs"] != "" && kv["producers"] != "":
		return fmt.Sprintf("%s %s, %s %s", kv["subs"], plural("sub", kv["subs"]), kv["producers"], plural("producer", kv["producers"]))
	case kv["subs"] != "" && len(keys) == 1:
		return fmt.Sprintf("%s %s", kv["subs"], plural("subscriber", kv["subs"]))
	}
	return strings.ReplaceAll(shape, "/", ", ")
}

func plural(word, n string) string {
	if n == "1" {
		return word
	}
	return word + "s"
}

// title returns a family's panel title.
func title(f *family) string {
	for _, x := range families {
		if x.name == f.name {
			return x.title
		}
	}
	return f.name
}

const (
	chartWidth = 10 * vg.Inch
	panelH     = 3.6 * vg.Inch
)

// captionH is the height of the caption line under the panels.
const captionH = 0.3 * vg.Inch

// draw1 draws every family as a panel, stacked, into one file, with
// caption under them.
func draw1(fams []*family, out, caption string) error {
	var rows [][]*plot.Plot
	for _, f := range fams {
		p, err := panel(f)
		if err != nil {
			return fmt.Errorf("%s: %w", f.name, err)
		}
		rows = append(rows, []*plot.Plot{p})
	}
	height := panelH*vg.Length(len(rows)) + captionH
	var c vg.CanvasWriterTo
	switch ext := strings.ToLower(filepath.Ext(out)); ext {
	case ".svg":
		// Fonts are named, not embedded (that would add about 1 MB): Liberation
		// Serif has the metrics of Times New Roman, which viewers fall back to.
		c = vgsvg.New(chartWidth, height)
	case ".png":
		c = vgimg.PngCanvas{Canvas: vgimg.NewWith(vgimg.UseWH(chartWidth, height), vgimg.UseDPI(110), vgimg.UseBackgroundColor(color.White))}
	case ".pdf":
		c = vgpdf.New(chartWidth, height)
	default:
		return fmt.Errorf("%s: unknown format %q: want .svg, .png or .pdf", out, ext)
	}
	dc := draw.New(c)
	dc.FillPolygon(color.White, []vg.Point{dc.Min, {X: dc.Min.X, Y: dc.Max.Y}, dc.Max, {X: dc.Max.X, Y: dc.Min.Y}})
	tiles := draw.Tiles{Rows: len(rows), Cols: 1, PadTop: 6, PadBottom: 6 + captionH, PadLeft: 6, PadRight: 10, PadY: 14}
	canvases := plot.Align(rows, tiles, dc)
	for i, row := range rows {
		row[0].Draw(canvases[i][0])
	}
	if caption != "" {
		sty := text.Style{
			Color:   color.Gray{Y: 0x55},
			Font:    font.From(plot.DefaultFont, 9),
			XAlign:  text.XCenter,
			YAlign:  text.YCenter,
			Handler: plot.DefaultTextHandler,
		}
		dc.FillText(sty, vg.Point{X: chartWidth / 2, Y: captionH / 2}, caption)
	}
	w, err := os.Create(out)
	if err != nil {
		return err
	}
	if _, err := c.WriteTo(w); err != nil {
		w.Close()
		return err
	}
	return w.Close()
}

// panel draws one family: a group of bars per shape, a bar per impl, the
// median ns/op on top of each bar.
func panel(f *family) (*plot.Plot, error) {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, s := range f.shapes {
		for _, impl := range f.impls {
			if v, ok := f.median(s, impl); ok {
				lo, hi = math.Min(lo, v), math.Max(hi, v)
			}
		}
	}
	logY := hi/lo > logAbove
	// y maps a value to the axis: log10(ns) on a log axis, whose bars
	// start at 1 ns (log10 = 0) and are cut at the axis minimum.
	y := func(v float64) float64 { return v }
	if logY {
		y = math.Log10
	}

	p := plot.New()
	p.Title.Text = title(f)
	p.Title.TextStyle.Font.Size = 12
	p.Title.Padding = 6
	p.BackgroundColor = color.White
	p.Y.Label.Text = "ns/op (median), lower is better"
	if logY {
		p.Y.Label.Text += ", log scale"
		p.Y.Tick.Marker = logNsTicks{}
	} else {
		p.Y.Tick.Marker = nsTicks{}
	}
	p.Y.Label.TextStyle.Font.Size = 10
	p.X.Tick.Label.Font.Size = 11
	p.Legend.Top = true
	p.Legend.Left = true
	p.Legend.TextStyle.Font.Size = 10
	p.Legend.ThumbnailWidth = 12
	grid := plotter.NewGrid()
	grid.Vertical.Width = 0
	grid.Horizontal.Color = color.Gray{Y: 0xdd}
	p.Add(grid)

	labels := make([]string, len(f.shapes))
	for i, s := range f.shapes {
		labels[i] = label(s)
	}
	p.NominalX(labels...)

	// Bars: a group spans groupFrac of the space between shapes.
	const groupFrac = 0.8
	plotW := chartWidth - 90 // about the width left by the y axis and padding
	groupW := plotW / vg.Length(len(f.shapes)) * groupFrac
	barW := min(groupW/vg.Length(len(f.impls)), 70)
	fontSize := vg.Length(8)
	if barW < 20 {
		fontSize = 6.5
	}
	other := 0
	for j, impl := range f.impls {
		vals := make(plotter.Values, len(f.shapes))
		var xys plotter.XYs
		var texts []string
		for i, s := range f.shapes {
			v, ok := f.median(s, impl)
			if !ok {
				continue // no bar: a zero height stays on the axis
			}
			vals[i] = y(v)
			xys = append(xys, plotter.XY{X: float64(i), Y: y(v)})
			texts = append(texts, short(v))
		}
		bars, err := plotter.NewBarChart(vals, barW*0.92)
		if err != nil {
			return nil, err
		}
		bars.LineStyle.Width = 0
		bars.Offset = (vg.Length(j) - vg.Length(len(f.impls)-1)/2) * barW
		if isHighlighted(impl) {
			bars.Color = highlightColor
		} else {
			bars.Color = otherColors[other%len(otherColors)]
			other++
		}
		p.Add(bars)
		p.Legend.Add(impl, bars)

		lab, err := plotter.NewLabels(plotter.XYLabels{XYs: xys, Labels: texts})
		if err != nil {
			return nil, err
		}
		for i := range lab.TextStyle {
			lab.TextStyle[i].Font.Size = font.Length(fontSize)
			lab.TextStyle[i].XAlign = text.XCenter
			lab.TextStyle[i].YAlign = text.YBottom
			if isHighlighted(impl) {
				lab.TextStyle[i].Font.Weight = xfont.WeightBold
				lab.TextStyle[i].Color = highlightColor
			}
		}
		lab.Offset = vg.Point{X: bars.Offset, Y: 1}
		p.Add(lab)
	}
	if logY {
		p.Y.Min = math.Floor(math.Log10(lo)*2)/2 - 0.25 // half a decade under the smallest
		p.Y.Max = math.Log10(hi) + 0.45                 // room for the value labels and the legend
	} else {
		p.Y.Min = 0
		p.Y.Max = hi * 1.25
	}
	return p, nil
}

// short formats ns compactly for a bar's label.
func short(ns float64) string {
	switch {
	case ns >= 1e6:
		return trim(ns/1e6) + "ms"
	case ns >= 1e3:
		return trim(ns/1e3) + "µs"
	}
	return trim(ns)
}

func trim(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

// nsTicks labels a linear axis of ns.
type nsTicks struct{}

func (nsTicks) Ticks(min, max float64) []plot.Tick {
	ticks := plot.DefaultTicks{}.Ticks(min, max)
	for i := range ticks {
		if ticks[i].Label != "" {
			ticks[i].Label = unit(ticks[i].Value)
		}
	}
	return ticks
}

// logNsTicks labels an axis of log10(ns): a labelled tick at 1, 2 and 5
// times each power of ten, an unlabelled one at the other multiples.
type logNsTicks struct{}

func (logNsTicks) Ticks(min, max float64) []plot.Tick {
	var ticks []plot.Tick
	for e := math.Floor(min); e <= math.Ceil(max); e++ {
		for m := 1.0; m < 10; m++ {
			v := math.Log10(m) + e
			if v < min || v > max {
				continue
			}
			t := plot.Tick{Value: v}
			if m == 1 || m == 2 || m == 5 {
				t.Label = unit(math.Pow(10, v))
			}
			ticks = append(ticks, t)
		}
	}
	return ticks
}

// unit formats ns with its unit, for axis labels.
func unit(ns float64) string {
	switch {
	case ns >= 1e6:
		return strconv.FormatFloat(ns/1e6, 'g', 3, 64) + " ms"
	case ns >= 1e3:
		return strconv.FormatFloat(ns/1e3, 'g', 3, 64) + " µs"
	}
	return strconv.FormatFloat(ns, 'g', 3, 64) + " ns"
}

// writeRatios writes, per family, a Markdown table of the median ns/op of
// each (shape, impl) and each competitor's ratio to ringbus.
func writeRatios(w io.Writer, fams []*family) error {
	var b strings.Builder
	b.WriteString("Medians of ns/op; in parentheses, the implementation's median over ringbus's (watermillbus's in the Watermill table): above 1, ringbus is that many times faster; below 1, slower.\n")
	for _, f := range fams {
		highlight, ok := f.base()
		if !ok {
			continue
		}
		fmt.Fprintf(&b, "\n**%s**\n\n| shape |", f.name)
		for _, impl := range f.impls {
			fmt.Fprintf(&b, " %s |", impl)
		}
		b.WriteString("\n|---|")
		for range f.impls {
			b.WriteString("---:|")
		}
		b.WriteString("\n")
		for _, s := range f.shapes {
			base, ok := f.median(s, highlight)
			fmt.Fprintf(&b, "| %s |", label(s))
			for _, impl := range f.impls {
				v, vok := f.median(s, impl)
				switch {
				case !vok:
					b.WriteString(" – |")
				case impl == highlight || !ok:
					fmt.Fprintf(&b, " %s |", unit(v))
				default:
					fmt.Fprintf(&b, " %s (%s×) |", unit(v), strconv.FormatFloat(v/base, 'f', 2, 64))
				}
			}
			b.WriteString("\n")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
