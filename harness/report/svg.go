package report

import (
	"fmt"
	"html"
	"html/template"
	"strings"
	"time"

	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/harness/ledger"
)

// axis maps a scenario's time span onto the x range of a lane drawing. Every
// lane of a scenario uses the same axis, so lanes drawn one under the other
// line up.
type axis struct {
	start, end time.Time
	x0, width  float64
}

// Lane geometry, in SVG user units.
const (
	laneWidth  = 880.0
	laneLeft   = 10.0
	laneTop    = 16.0 // fault labels above
	laneHeight = 30.0 // the attempt row
	bandHeight = 9.0  // the queue visibility band under it
	axisHeight = 16.0
)

func scenarioAxis(h *history.History, r *ledger.Result) axis {
	a := axis{x0: laneLeft, width: laneWidth - 2*laneLeft}
	if h != nil {
		a.start, a.end = h.Started, h.Ended
		for _, f := range h.Faults {
			a.end = later(a.end, f.End)
		}
	}
	if r != nil {
		for _, f := range r.Findings {
			if !f.Failed && !f.Warn {
				continue
			}
			for _, e := range f.Timeline {
				if a.start.IsZero() || e.At.Before(a.start) {
					a.start = e.At
				}
				a.end = later(a.end, e.At)
			}
		}
	}
	if !a.end.After(a.start) {
		a.end = a.start.Add(time.Second)
	}
	// A little room on the right for the last mark.
	a.end = a.end.Add(a.end.Sub(a.start) / 50)
	return a
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func (a axis) x(t time.Time) float64 {
	if t.Before(a.start) {
		t = a.start
	}
	if t.After(a.end) {
		t = a.end
	}
	return a.x0 + a.width*float64(t.Sub(a.start))/float64(a.end.Sub(a.start))
}

// ticks returns about n round tick times.
func (a axis) ticks(n int) []time.Duration {
	span := a.end.Sub(a.start)
	steps := []time.Duration{time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 15 * time.Second,
		30 * time.Second, time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute,
		30 * time.Minute, time.Hour, 2 * time.Hour, 6 * time.Hour, 12 * time.Hour, 24 * time.Hour}
	step := steps[len(steps)-1]
	for _, s := range steps {
		if span/s <= time.Duration(n) {
			step = s
			break
		}
	}
	var out []time.Duration
	for d := time.Duration(0); d <= span; d += step {
		out = append(out, d)
	}
	return out
}

func tickLabel(d time.Duration) string {
	if d%time.Minute == 0 && d > 0 {
		return fmt.Sprintf("+%dm", int(d.Minutes()))
	}
	return fmt.Sprintf("+%ds", int(d.Seconds()))
}

// svgBuilder writes SVG with every text escaped.
type svgBuilder struct{ strings.Builder }

func (b *svgBuilder) f(format string, args ...any) { fmt.Fprintf(&b.Builder, format, args...) }

func esc(s string) string { return html.EscapeString(s) }

// laneSVG draws one (message, recipient): faults as shaded spans, the
// submission, every attempt coloured by its reply class, DSNs, missed
// deadlines, and under it the queue visibility band, on the scenario's axis.
func laneSVG(f ledger.Finding, h *history.History, a axis) template.HTML {
	total := laneTop + laneHeight + bandHeight + axisHeight
	var b svgBuilder
	b.f(`<svg class="lane" role="img" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" xmlns="http://www.w3.org/2000/svg">`,
		laneWidth, total, laneWidth, total)
	b.f(`<title>%s</title>`, esc(subject(f)))
	midY := laneTop + laneHeight/2
	// Faults first, behind everything: one shaded span each, labelled
	// where the label does not run into the one before.
	labelEnd := 0.0
	if h != nil {
		for _, fl := range h.Faults {
			x1 := a.x(fl.Start)
			end := fl.End
			if end.IsZero() || end.Before(fl.Start) {
				end = fl.Start
			}
			w := a.x(end) - x1
			if w < 2 {
				w = 2
			}
			title := string(fl.Kind) + " " + ledger.Rel(h.Started, fl.Start) + " – " + ledger.Rel(h.Started, end)
			if fl.Detail != "" {
				title += ": " + fl.Detail
			}
			b.f(`<g class="fault %s"><title>%s</title><rect x="%.1f" y="%.1f" width="%.1f" height="%.1f"/>`,
				faultClass(fl.Kind), esc(title), x1, laneTop, w, laneHeight+bandHeight)
			if label := faultLabel(fl.Kind); x1 >= labelEnd {
				b.f(`<text x="%.1f" y="10">%s</text>`, x1+1, esc(label))
				labelEnd = x1 + 1 + 5*float64(len(label)) + 4
			}
			b.f(`</g>`)
		}
	}
	b.f(`<line class="base" x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`, a.x0, midY, a.x0+a.width, midY)
	// Queue visibility band: grey where no listing tells, green where listed,
	// red where a listing did not show the message.
	bandY := laneTop + laneHeight
	b.f(`<rect class="q-none" x="%.1f" y="%.1f" width="%.1f" height="%.1f"><title>no queue listing</title></rect>`, a.x0, bandY, a.width, bandHeight)
	var qs []ledger.TimelineEntry
	for _, e := range f.Timeline {
		if e.What == ledger.WhatQueueSeen || e.What == ledger.WhatQueueMissing {
			qs = append(qs, e)
		}
	}
	for i, e := range qs {
		end := a.end
		if i+1 < len(qs) {
			end = qs[i+1].At
		} else if h != nil && len(h.Queue) > 0 {
			end = later(h.Queue[len(h.Queue)-1].At, e.At)
			if !end.After(e.At) {
				end = e.At.Add(a.end.Sub(a.start) / 200)
			}
		}
		cls, what := "q-listed", "listed"
		if e.What == ledger.WhatQueueMissing {
			cls, what = "q-missing", "not listed"
		}
		b.f(`<rect class="%s" x="%.1f" y="%.1f" width="%.1f" height="%.1f"><title>%s %s: %s</title></rect>`,
			cls, a.x(e.At), bandY, maxf(a.x(end)-a.x(e.At), 1.5), bandHeight, esc(ledger.Rel(started(h), e.At)), what, esc(e.Detail))
	}
	deadlineEnd := 0.0
	for _, e := range f.Timeline {
		x := a.x(e.At)
		rel := esc(ledger.Rel(started(h), e.At))
		switch e.What {
		case ledger.WhatSubmitted:
			b.f(`<path class="sub" d="M%.1f %.1fl7 -9h-14z"><title>%s submitted: %s</title></path>`, x, midY, rel, esc(e.Detail))
		case ledger.WhatDeadline:
			b.f(`<g class="deadline"><title>%s deadline: %s</title><line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`,
				rel, esc(e.Detail), x, laneTop-4, x, bandY+bandHeight)
			if x >= deadlineEnd {
				// A retry, checkpoint or latency deadline passed with nothing
				// done; the queue lifetime is the earliest a bounce may come.
				label := "missed"
				if strings.HasPrefix(e.Detail, "queue lifetime") {
					label = "lifetime"
				}
				b.f(`<text x="%.1f" y="%.1f">%s</text>`, x+2, laneTop+6, label)
				deadlineEnd = x + 42
			}
			b.f(`</g>`)
		case ledger.WhatDSN:
			b.f(`<rect class="dsn" x="%.1f" y="%.1f" width="9" height="7"><title>%s DSN: %s</title></rect>`, x-4.5, midY+3, rel, esc(e.Detail))
		}
	}
	for _, m := range attempts(f) {
		b.f(`<circle class="att %s" cx="%.1f" cy="%.1f" r="5.5"><title>%s attempt: %s</title></circle>`,
			m.Class, a.x(m.At), midY, esc(ledger.Rel(started(h), m.At)), esc(m.Detail))
	}
	// The axis.
	axY := bandY + bandHeight
	b.f(`<g class="axis"><line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`, a.x0, axY, a.x0+a.width, axY)
	for _, d := range a.ticks(10) {
		x := a.x(a.start.Add(d))
		b.f(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/><text x="%.1f" y="%.1f">%s</text>`, x, axY, x, axY+3, x, axY+13, tickLabel(d))
	}
	b.f(`</g></svg>`)
	return template.HTML(b.String())
}

func maxf(a, b float64) float64 {
	if a > b {
		return a
	}
	return b
}

func faultClass(k history.FaultKind) string {
	switch k {
	case history.FaultRelayRestart, history.FaultRelayStop, history.FaultRelayStart:
		return "f-relay"
	case history.FaultFakeMTAStop, history.FaultFakeMTAStart, history.FaultFakeMTARestart, history.FaultFakeMTAWipe:
		return "f-mta"
	}
	return "f-other"
}

func faultLabel(k history.FaultKind) string {
	switch k {
	case history.FaultRelayRestart:
		return "relay restart"
	case history.FaultRelayStop:
		return "relay down"
	case history.FaultFakeMTAStop:
		return "MTA down"
	case history.FaultFakeMTARestart:
		return "MTA restart"
	}
	return string(k)
}

// histogramSVG draws sorted durations as a small bar chart in bins from 0 to
// the largest.
func histogramSVG(ds []time.Duration, title string) template.HTML {
	const bins, w, hgt = 24, 240.0, 48.0
	if len(ds) == 0 {
		return ""
	}
	max := ds[len(ds)-1]
	if max <= 0 {
		max = time.Millisecond
	}
	counts := make([]int, bins)
	for _, d := range ds {
		i := int(float64(d) / float64(max) * bins)
		if i >= bins {
			i = bins - 1
		}
		counts[i]++
	}
	top := 0
	for _, c := range counts {
		if c > top {
			top = c
		}
	}
	var b svgBuilder
	b.f(`<svg class="hist" role="img" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" xmlns="http://www.w3.org/2000/svg"><title>%s</title>`, w, hgt+12, w, hgt+12, esc(title))
	bw := w / bins
	for i, c := range counts {
		if c == 0 {
			continue
		}
		bh := maxf(hgt*float64(c)/float64(top), 1)
		lo, hi := max*time.Duration(i)/bins, max*time.Duration(i+1)/bins
		b.f(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f"><title>%s–%s: %d</title></rect>`, float64(i)*bw+.5, hgt-bh, bw-1, bh, short(lo), short(hi), c)
	}
	b.f(`<line x1="0" y1="%.1f" x2="%.0f" y2="%.1f"/><text x="0" y="%.0f">0</text><text x="%.0f" y="%.0f" text-anchor="end">%s</text></svg>`,
		hgt, w, hgt, hgt+11, w, hgt+11, short(max))
	return template.HTML(b.String())
}

// gaugeSVG draws the longest observed retry gap against retry_max and the
// ledger's bound (retry_max + slack): how close the relay runs to it.
func gaugeSVG(longest, p90, retryMax time.Duration) template.HTML {
	if retryMax <= 0 {
		return ""
	}
	const w, hgt = 240.0, 22.0
	bound := ledger.RetryBound(retryMax)
	scale := bound
	if longest > scale {
		scale = longest
	}
	x := func(d time.Duration) float64 { return w * float64(d) / float64(scale) }
	cls := "g-ok"
	switch {
	case longest > bound:
		cls = "g-over"
	case longest > retryMax:
		cls = "g-near"
	}
	var b svgBuilder
	b.f(`<svg class="gauge" role="img" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" xmlns="http://www.w3.org/2000/svg">`, w, hgt, w, hgt)
	b.f(`<title>longest retry gap %s, p90 %s; retry_max %s, bound %s</title>`, short(longest), short(p90), retryMax, bound)
	b.f(`<rect class="g-bg" x="0" y="4" width="%.1f" height="10"/>`, w)
	b.f(`<rect class="%s" x="0" y="4" width="%.1f" height="10"/>`, cls, x(longest))
	b.f(`<line class="g-p90" x1="%.1f" y1="2" x2="%.1f" y2="16"/>`, x(p90), x(p90))
	b.f(`<line class="g-max" x1="%.1f" y1="0" x2="%.1f" y2="18"/>`, x(retryMax), x(retryMax))
	b.f(`<line class="g-bound" x1="%.1f" y1="0" x2="%.1f" y2="18"/>`, x(bound)-1, x(bound)-1)
	b.f(`</svg>`)
	return template.HTML(b.String())
}
