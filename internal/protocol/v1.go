package protocol

// v1 field set, as bits.
const (
	v1Device = 1 << iota
	v1Boot
	v1Seq
	v1TS
	v1Metrics
)

var v1Fields = [...]string{"device", "boot", "seq", "ts", "metrics"}

// decodeV1 decodes the v1 schema:
// {"v":1,"device":"...","boot":N,"seq":N,"ts":N,"metrics":{"name":X,...}}
func (d *document) decodeV1(device string, checkDevice bool) (Reading, *Rejection) {
	r := Reading{Version: Version1}
	var (
		seen    int
		dev     int // node of device
		metrics int // node of metrics
		rej     *Rejection
	)
	for i := 1; i < len(d.nodes) && rej == nil; i = int(d.nodes[i].next) {
		switch string(d.key(i)) {
		case "v":
		case "device":
			seen |= v1Device
			dev = i
		case "boot":
			seen |= v1Boot
			r.Boot, rej = d.uintField(i, "boot")
		case "seq":
			seen |= v1Seq
			r.Seq, rej = d.uintField(i, "seq")
			if rej == nil && r.Seq == 0 {
				rej = reject(ReasonBadField, "seq must be at least 1, got 0")
			}
		case "ts":
			seen |= v1TS
			r.TS, rej = d.intField(i, "ts")
		case "metrics":
			seen |= v1Metrics
			metrics = i
		default:
			rej = reject(ReasonBadField, "unknown field %s", quote(d.key(i)))
		}
	}
	if rej != nil {
		return Reading{}, rej
	}
	for b, name := range v1Fields {
		if seen&(1<<b) == 0 {
			return Reading{}, reject(ReasonBadField, "missing field %s", name)
		}
	}

	// d.strs collects the device and the metric names, so that the reading's
	// strings cost one allocation.
	devLen, rej := d.device(dev, device, checkDevice)
	if rej != nil {
		return Reading{}, rej
	}

	m := d.nodes[metrics]
	if m.kind != kindObject {
		return Reading{}, reject(ReasonBadMetric, "metrics must be an object, got %s", m.kind)
	}
	count := d.count(metrics)
	switch {
	case count == 0:
		return Reading{}, reject(ReasonBadMetric, "metrics is empty")
	case count > MaxMetrics:
		return Reading{}, reject(ReasonBadMetric, "metrics has %d entries, max %d", count, MaxMetrics)
	}
	r.Metrics = make([]Metric, count)
	ends := make([]int, 0, MaxMetrics) // end of each name in d.strs
	var names [2 * MaxMetrics]uint8    // open addressing: index in ends + 1
	for i, k := metrics+1, 0; i < int(m.next); i, k = int(d.nodes[i].next), k+1 {
		name := d.key(i)
		if !validMetricName(name) {
			return Reading{}, reject(ReasonBadMetric, "metric name %s does not match %s", quote(name), metricPattern)
		}
		for slot := nameHash(name) % uint32(len(names)); ; slot = (slot + 1) % uint32(len(names)) {
			j := int(names[slot]) - 1
			if j < 0 {
				names[slot] = uint8(k + 1)
				break
			}
			start := devLen
			if j > 0 {
				start = ends[j-1]
			}
			if string(d.strs[start:ends[j]]) == string(name) {
				return Reading{}, reject(ReasonBadMetric, "duplicate metric %s", quote(name))
			}
		}
		n := d.nodes[i]
		if n.kind != kindNumber {
			return Reading{}, reject(ReasonBadMetric, "metric %s must be a number, got %s", quote(name), n.kind)
		}
		v, ok := parseFloat(d.raw(i))
		if !ok {
			return Reading{}, reject(ReasonBadMetric, "metric %s value %s is out of float64 range", quote(name), quote(d.raw(i)))
		}
		r.Metrics[k].Value = v
		d.strs = append(d.strs, name...)
		ends = append(ends, len(d.strs))
	}

	s := string(d.strs)
	r.Device = s[:devLen]
	start := devLen
	for k, end := range ends {
		r.Metrics[k].Name = s[start:end]
		start = end
	}
	return r, nil
}

// device puts the device, string node dev, at the start of d.strs and
// returns its length; when checkDevice is set it must equal device.
func (d *document) device(dev int, device string, checkDevice bool) (int, *Rejection) {
	if d.nodes[dev].kind != kindString {
		return 0, reject(ReasonBadField, "device must be a string, got %s", d.nodes[dev].kind)
	}
	d.strs = d.appendString(d.strs[:0], dev)
	if !validName(d.strs) {
		return 0, reject(ReasonBadField, "device %s does not match %s", quote(d.strs), namePattern)
	}
	if checkDevice && string(d.strs) != device {
		return 0, reject(ReasonTopicMismatch, "device %s differs from the topic's device-id %s", quote(d.strs), quote(device))
	}
	return len(d.strs), nil
}

// appendString appends the content of string node i, unescaped.
func (d *document) appendString(dst []byte, i int) []byte {
	b := d.raw(i)
	b = b[1 : len(b)-1]
	if d.nodes[i].flags&flagEscaped == 0 {
		return append(dst, b...)
	}
	return appendUnescaped(dst, b)
}

// uintField parses node i as an unsigned integer written without fraction,
// exponent or sign.
func (d *document) uintField(i int, field string) (uint64, *Rejection) {
	n := d.nodes[i]
	if n.kind != kindNumber {
		return 0, reject(ReasonBadField, "%s must be an unsigned integer, got %s", field, n.kind)
	}
	if n.flags != 0 {
		return 0, reject(ReasonBadField, "%s must be an unsigned integer, got %s", field, quote(d.raw(i)))
	}
	v, ok := parseUint(d.raw(i))
	if !ok {
		return 0, reject(ReasonBadField, "%s %s overflows uint64", field, quote(d.raw(i)))
	}
	return v, nil
}

// intField parses node i as an integer written without fraction or exponent.
func (d *document) intField(i int, field string) (int64, *Rejection) {
	n := d.nodes[i]
	if n.kind != kindNumber {
		return 0, reject(ReasonBadField, "%s must be an integer, got %s", field, n.kind)
	}
	if n.flags&^flagNegative != 0 {
		return 0, reject(ReasonBadField, "%s must be an integer, got %s", field, quote(d.raw(i)))
	}
	v, ok := parseInt(d.raw(i))
	if !ok {
		return 0, reject(ReasonBadField, "%s %s overflows int64", field, quote(d.raw(i)))
	}
	return v, nil
}
