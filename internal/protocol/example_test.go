package protocol_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/telemetry-demo/telemetry/internal/protocol"
)

func ExampleDecode() {
	payload := []byte(`{"v":1,"device":"th-00042","boot":1764100000,"seq":17,"ts":1764100000123,` +
		`"metrics":{"temperature_c":21.5,"humidity_pct":40.2}}`)
	now := time.UnixMilli(1764100001000)

	topic, r, err := protocol.Decode("telemetry/us-east/thermo/th-00042", payload, now, protocol.Limits{})
	fmt.Println(topic.Subject(), r.ID(), r.Metrics, err)

	_, _, err = protocol.Decode("telemetry/us-east/thermo/th-00043", payload, now, protocol.Limits{})
	var rej *protocol.Rejection
	if errors.As(err, &rej) {
		fmt.Println(rej.Reason)
	}
	// Output:
	// telemetry.us-east.thermo.th-00042 th-00042:1764100000:17 [{temperature_c 21.5} {humidity_pct 40.2}] <nil>
	// topic_mismatch
}

func ExampleAppendEncode() {
	r := protocol.Reading{Device: "th-00042", Boot: 1764100000, Seq: 17, TS: 1764100000123,
		Metrics: []protocol.Metric{{Name: "temperature_c", Value: 21.5}}}
	buf := make([]byte, 0, protocol.MaxPayloadBytes)
	buf = protocol.AppendEncode(buf[:0], r)
	fmt.Println(string(buf))
	// Output:
	// {"v":1,"device":"th-00042","boot":1764100000,"seq":17,"ts":1764100000123,"metrics":{"temperature_c":21.5}}
}
