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

	topic, b, err := protocol.Decode("telemetry/us-east/thermo/th-00042", payload, now, protocol.Limits{})
	fmt.Println(topic.Subject(), b.ID(), b.Readings[0].Metrics, err)

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

func ExampleDecode_batch() {
	payload := []byte(`{"v":2,"device":"th-00042","boot":1764100000,"seq":17,` +
		`"metrics":["temperature_c","humidity_pct"],"readings":[[1764100000123,21.5,40.2],[1764100001123,21.6,40.1]]}`)
	now := time.UnixMilli(1764100002000)

	_, b, err := protocol.Decode("telemetry/us-east/thermo/th-00042", payload, now, protocol.Limits{})
	fmt.Println(b.ID(), err)
	for _, r := range b.Readings {
		fmt.Println(r.ID(), r.TS, r.Metrics)
	}
	// Output:
	// th-00042:1764100000:17-18 <nil>
	// th-00042:1764100000:17 1764100000123 [{temperature_c 21.5} {humidity_pct 40.2}]
	// th-00042:1764100000:18 1764100001123 [{temperature_c 21.6} {humidity_pct 40.1}]
}

func ExampleAppendEncodeBatch() {
	readings := []protocol.Reading{
		{Device: "th-00042", Boot: 1764100000, Seq: 17, TS: 1764100000123,
			Metrics: []protocol.Metric{{Name: "temperature_c", Value: 21.5}}},
		{Device: "th-00042", Boot: 1764100000, Seq: 18, TS: 1764100001123,
			Metrics: []protocol.Metric{{Name: "temperature_c", Value: 21.6}}},
	}
	buf := make([]byte, 0, protocol.MaxBatchBytes)
	buf = protocol.AppendEncodeBatch(buf[:0], readings)
	fmt.Println(string(buf))
	// Output:
	// {"v":2,"device":"th-00042","boot":1764100000,"seq":17,"metrics":["temperature_c"],"readings":[[1764100000123,21.5],[1764100001123,21.6]]}
}
