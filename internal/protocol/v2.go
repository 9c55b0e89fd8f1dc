package protocol

import "strconv"

// v2 field set, as bits.
const (
	v2Device = 1 << iota
	v2Boot
	v2Seq
	v2Metrics
	v2Readings
)

var v2Fields = [...]string{"device", "boot", "seq", "metrics", "readings"}

// decodeV2 decodes the v2 schema, a batch of one device's readings with
// consecutive seqs from seq, one boot, each row a ts and one value per
// name of metrics, in that order:
//
//	{"v":2,"device":"...","boot":N,"seq":N,"metrics":["name",...],"readings":[[ts,x,...],...]}
//
// Checks run on the envelope's fields (bad_field), the device
// (topic_mismatch), the metric names (bad_metric), then each reading in
// order (bad_field, bad_metric). A rejection of one reading rejects the
// batch; its detail names the reading by index and seq (docs/PROTOCOL.md
// says why).
func (d *document) decodeV2(device string, checkDevice bool) (Batch, *Rejection) {
	var (
		boot, first uint64
		seen        int
		dev         int // node of device
		metrics     int // node of metrics
		rows        int // node of readings
		rej         *Rejection
	)
	for i := 1; i < len(d.nodes) && rej == nil; i = int(d.nodes[i].next) {
		switch string(d.key(i)) {
		case "v":
		case "device":
			seen |= v2Device
			dev = i
		case "boot":
			seen |= v2Boot
			boot, rej = d.uintField(i, "boot")
		case "seq":
			seen |= v2Seq
			first, rej = d.uintField(i, "seq")
			if rej == nil && first == 0 {
				rej = reject(ReasonBadField, "seq must be at least 1, got 0")
			}
		case "metrics":
			seen |= v2Metrics
			metrics = i
		case "readings":
			seen |= v2Readings
			rows = i
		default:
			rej = reject(ReasonBadField, "unknown field %s", quote(d.key(i)))
		}
	}
	if rej != nil {
		return Batch{}, rej
	}
	for b, name := range v2Fields {
		if seen&(1<<b) == 0 {
			return Batch{}, reject(ReasonBadField, "missing field %s", name)
		}
	}
	r := d.nodes[rows]
	if r.kind != kindArray {
		return Batch{}, reject(ReasonBadField, "readings must be an array, got %s", r.kind)
	}
	n := d.count(rows)
	switch {
	case n == 0:
		return Batch{}, reject(ReasonBadField, "readings is empty")
	case n > MaxBatchReadings:
		return Batch{}, reject(ReasonBadField, "readings has %d entries, max %d", n, MaxBatchReadings)
	case first+uint64(n-1) < first:
		return Batch{}, reject(ReasonBadField, "seq %d plus %d readings overflows uint64", first, n)
	}
	devLen, rej := d.device(dev, device, checkDevice)
	if rej != nil {
		return Batch{}, rej
	}

	// The names, after the device in d.strs: one allocation for every
	// string of the batch.
	m := d.nodes[metrics]
	if m.kind != kindArray {
		return Batch{}, reject(ReasonBadMetric, "metrics must be an array of names, got %s", m.kind)
	}
	names := d.count(metrics)
	switch {
	case names == 0:
		return Batch{}, reject(ReasonBadMetric, "metrics is empty")
	case names > MaxMetrics:
		return Batch{}, reject(ReasonBadMetric, "metrics has %d names, max %d", names, MaxMetrics)
	}
	var ends [MaxMetrics]int // end of each name in d.strs
	for i, k := metrics+1, 0; i < int(m.next); i, k = int(d.nodes[i].next), k+1 {
		if d.nodes[i].kind != kindString {
			return Batch{}, reject(ReasonBadMetric, "metrics[%d] must be a name, got %s", k, d.nodes[i].kind)
		}
		start := len(d.strs)
		d.strs = d.appendString(d.strs, i)
		name := d.strs[start:]
		if !validMetricName(name) {
			return Batch{}, reject(ReasonBadMetric, "metric name %s does not match %s", quote(name), metricPattern)
		}
		prev := devLen
		for j := range k {
			if string(d.strs[prev:ends[j]]) == string(name) {
				return Batch{}, reject(ReasonBadMetric, "duplicate metric %s", quote(name))
			}
			prev = ends[j]
		}
		ends[k] = len(d.strs)
	}

	b := Batch{Version: Version2, Readings: make([]Reading, n)}
	values := make([]Metric, n*names)
	for i, k := rows+1, 0; i < int(r.next); i, k = int(d.nodes[i].next), k+1 {
		seq := first + uint64(k)
		// in names the reading in a rejection's detail.
		in := func(rej *Rejection) *Rejection {
			rej.Detail = "readings[" + strconv.Itoa(k) + "] (seq " + strconv.FormatUint(seq, 10) + "): " + rej.Detail
			return rej
		}
		row := d.nodes[i]
		if row.kind != kindArray {
			return Batch{}, in(reject(ReasonBadField, "must be an array [ts, value, ...], got %s", row.kind))
		}
		if got := d.count(i); got != names+1 {
			return Batch{}, in(reject(ReasonBadMetric, "has %d entries, want ts and %d values", got, names))
		}
		ts, rej := d.intField(i+1, "ts")
		if rej != nil {
			return Batch{}, in(rej)
		}
		ms := values[k*names : (k+1)*names : (k+1)*names]
		for j, v := 0, int(d.nodes[i+1].next); j < names; j, v = j+1, int(d.nodes[v].next) {
			start := devLen
			if j > 0 {
				start = ends[j-1]
			}
			name := d.strs[start:ends[j]]
			if d.nodes[v].kind != kindNumber {
				return Batch{}, in(reject(ReasonBadMetric, "metric %s must be a number, got %s", quote(name), d.nodes[v].kind))
			}
			x, ok := parseFloat(d.raw(v))
			if !ok {
				return Batch{}, in(reject(ReasonBadMetric, "metric %s value %s is out of float64 range", quote(name), quote(d.raw(v))))
			}
			ms[j].Value = x
		}
		b.Readings[k] = Reading{Version: Version2, Boot: boot, Seq: seq, TS: ts, Metrics: ms}
	}

	s := string(d.strs)
	b.Device, b.Boot = s[:devLen], boot
	var nameOf [MaxMetrics]string
	for j, start := 0, devLen; j < names; j++ {
		nameOf[j] = s[start:ends[j]]
		start = ends[j]
	}
	for k := range b.Readings {
		b.Readings[k].Device = b.Device
		for j := range b.Readings[k].Metrics {
			b.Readings[k].Metrics[j].Name = nameOf[j]
		}
	}
	return b, nil
}

// count returns how many children container node i has.
func (d *document) count(i int) int {
	n := 0
	for c := i + 1; c < int(d.nodes[i].next); c = int(d.nodes[c].next) {
		n++
	}
	return n
}
