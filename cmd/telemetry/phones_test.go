package main

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	neturl "net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/device"
	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/telemetry-demo/telemetry/internal/testharness"
	"github.com/telemetry-demo/telemetry/join"
	"github.com/telemetry-demo/telemetry/pipeline"
	"github.com/telemetry-demo/telemetry/storage"
)

// TestAPhoneJoinsTheDemo: with --mqtt-ws, a phone that asks the
// dashboard's POST /api/join gets a device of its own, logs in over MQTT on
// WebSocket with it, and its reading goes through ingest and JetStream into
// ClickHouse under its id and type phone, once. A hostile phone's payloads,
// on its own topic, are dead-lettered with their reasons like any
// device's.
func TestAPhoneJoinsTheDemo(t *testing.T) {
	testharness.RequireClickHouse(t)
	out := startDemoWith(t, pipeline.DemoConfig{
		MQTT: "127.0.0.1:0", MQTTWS: "127.0.0.1:0", Listen: "127.0.0.1:0", StorageListen: "127.0.0.1:0",
		DataDir: t.TempDir(), Devices: 3, Rate: 3, Seed: 1,
	})
	url := consoleValue(t, out, dashboardLine)
	consoleValue(t, out, regexp.MustCompile(`phones join\s+(\S+)`))
	addr := consoleValue(t, out, regexp.MustCompile(`storage\s+ClickHouse (\S+),`))

	link, err := neturl.Parse(joinLink(t, url))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(url+"/api/join?"+link.RawQuery, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var c join.Credential
	err = json.NewDecoder(resp.Body).Decode(&c)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || err != nil {
		t.Fatalf("POST /api/join: %s (%v)", resp.Status, err)
	}
	phone := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(c.Broker).SetClientID(c.ClientID).
		SetUsername(c.User).SetPassword(c.Password).SetAutoReconnect(false))
	if tok := phone.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("the phone logging in at %s: %v", c.Broker, tok.Error())
	}
	defer phone.Disconnect(50)
	reading := fmt.Sprintf(`{"v":1,"device":%q,"boot":1,"seq":1,"ts":%d,"metrics":{"tilt_deg":12.5,"accel_ms2":9.81}}`, c.Device, time.Now().UnixMilli())
	for range 2 { // sent twice, stored once
		if tok := phone.Publish(c.Topic, 1, false, reading); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("the phone publishing: %v", tok.Error())
		}
	}
	for _, hostile := range []string{
		`{"v":1,"device":`, // bad_json
		fmt.Sprintf(`{"v":1,"device":"th-00001","boot":1,"seq":1,"ts":%d,"metrics":{"temperature_c":99}}`, time.Now().UnixMilli()), // topic_mismatch: another device's reading
	} {
		if tok := phone.Publish(c.Topic, 1, false, hostile); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("the phone publishing a hostile payload: %v", tok.Error())
		}
	}
	testharness.CheckFor(t, 30*time.Second, 250*time.Millisecond, func() error {
		s, err := snapshot(url)
		if err != nil {
			return err
		}
		for _, r := range s.Regions {
			if r.Region == c.Region && r.Rejected["bad_json"] == 1 && r.Rejected["topic_mismatch"] == 1 {
				return nil
			}
		}
		return fmt.Errorf("%s's dead letters by reason do not show the phone's bad_json and topic_mismatch: %+v", c.Region, s.Regions)
	})
	conn, err := storage.Dial(storage.Config{ClickHouseAddr: addr})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	testharness.CheckFor(t, 60*time.Second, 250*time.Millisecond, func() error {
		var n uint64
		var typ, region string
		err := conn.QueryRow(context.Background(),
			`SELECT count(), any(device_type), any(region) FROM telemetry.readings FINAL WHERE device = ?`, c.Device).Scan(&n, &typ, &region)
		if err != nil || n != 2 || typ != "phone" || region != c.Region {
			return fmt.Errorf("ClickHouse holds %d rows of %s (type %q, region %q; want 2 metrics of one reading, phone, %s): %v", n, c.Device, typ, region, c.Region, err)
		}
		return nil
	})
}

// joinLink is the join link the demo's join view (/join/show) shows.
func joinLink(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url + "/join/show")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`id="join-link">([^<]+)<`).FindSubmatch(b)
	if err != nil || resp.StatusCode != http.StatusOK || m == nil {
		t.Fatalf("the join view: %s without a link (%v)", resp.Status, err)
	}
	return html.UnescapeString(string(m[1]))
}

// TestFiftyPhonesJoinFromTheBrowser: fifty phones, each a tab of a real
// Chromium emulating a phone (half an iPhone 12, half a Pixel 5), open
// /join, get a device of their own, and publish a reading a second from
// their motion sensors (synthetic deviceorientation events) over MQTT on
// WebSocket. While they publish the dashboard counts fifty phones. Once
// stopped, each sees its last reading's journey, from its own send and the
// broker's acknowledgement to JetStream in its region, the copies in the
// other two and ClickHouse; once
// each has stopped and had every reading acknowledged, ClickHouse holds
// every reading of every phone once, with the tilt the sensor events gave.
// Then the presenter clicks "remove all phones" on the dashboard: every
// phone is disconnected and its page says it is no longer a device, and
// the join link it came by opens the expired page.
func TestFiftyPhonesJoinFromTheBrowser(t *testing.T) {
	const phones = 50
	testharness.RequireClickHouse(t)
	out := startDemoWith(t, pipeline.DemoConfig{
		MQTT: "127.0.0.1:0", MQTTWS: "127.0.0.1:0", Listen: "127.0.0.1:0", StorageListen: "127.0.0.1:0",
		DataDir: t.TempDir(), Devices: 3, Rate: 3, Seed: 1, PresenterToken: testToken,
	})
	url := consoleValue(t, out, dashboardLine)
	addr := consoleValue(t, out, regexp.MustCompile(`storage\s+ClickHouse (\S+),`))
	link := joinLink(t, url)
	if resp, err := http.Get(url + "/join/mqtt.min.js"); err != nil || resp.StatusCode != http.StatusOK {
		msg := "this build has no phones' MQTT client: run make web-deps (scripts/web-deps.sh)"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	browser := testharness.Browser(t, 390, 844)
	tabs := make([]context.Context, phones)
	for i := range tabs {
		ctx, cancel := chromedp.NewContext(browser)
		t.Cleanup(cancel)
		tabs[i] = ctx
		model := device.IPhone12
		if i%2 == 1 {
			model = device.Pixel5
		}
		if err := chromedp.Do(ctx, chromedp.Emulate(model), chromedp.Navigate(link)); err != nil {
			t.Fatalf("phone %d opening /join: %v", i+1, err)
		}
	}
	// Every phone tilts forward by 45 degrees and to the side by -20.
	const tilt = `window.dispatchEvent(new DeviceOrientationEvent("deviceorientation", {alpha: 0, beta: 45, gamma: -20}))`
	for i, ctx := range tabs {
		if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](tilt)); err != nil {
			t.Fatalf("phone %d tilting: %v", i+1, err)
		}
	}
	acked := func(ctx context.Context) (n int, errText string) {
		n, _ = chromedp.Run(ctx, chromedp.Evaluate[int](`Number(document.body.dataset.acked || 0)`))
		errText, _ = chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.dataset.error || ""`))
		return n, errText
	}
	testharness.CheckFor(t, 90*time.Second, 250*time.Millisecond, func() error {
		for i, ctx := range tabs {
			if n, e := acked(ctx); n < 3 {
				return fmt.Errorf("phone %d has %d readings acknowledged (error %q), want 3 or more", i+1, n, e)
			}
		}
		return nil
	})
	testharness.CheckFor(t, 30*time.Second, 250*time.Millisecond, func() error {
		s, err := snapshot(url)
		if err != nil {
			return err
		}
		n := 0
		for _, r := range s.Regions {
			n += r.ActivePhones
		}
		if n != phones {
			return fmt.Errorf("the dashboard counts %d phones, want %d", n, phones)
		}
		return nil
	})

	sent := map[string]int{}
	ids := make([]string, len(tabs))
	for i, ctx := range tabs {
		res, err := chromedp.Run(ctx, chromedp.Evaluate[struct{ Sent, Acked int }](`stopPhone()`, chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatalf("stopping phone %d: %v", i+1, err)
		}
		id, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.dataset.device`))
		if err != nil {
			t.Fatalf("phone %d's device: %v", i+1, err)
		}
		if res.Sent == 0 || res.Acked != res.Sent {
			t.Errorf("phone %d (%s): %d sent, %d acknowledged; want every one acknowledged", i+1, id, res.Sent, res.Acked)
		}
		sent[id], ids[i] = res.Sent, id
	}
	// Each phone sees its last reading's journey, every hop done.
	testharness.CheckFor(t, 60*time.Second, 250*time.Millisecond, func() error {
		for i, ctx := range tabs {
			hops, err := chromedp.Run(ctx, chromedp.Evaluate[string](
				`document.body.dataset.journeyDone === "1" ? [...document.querySelectorAll("#phone-journey td:first-child")].map((td) => td.textContent).join("|") : ""`))
			if err != nil || hops == "" {
				return fmt.Errorf("phone %d has not seen a whole journey yet (%v)", i+1, err)
			}
			for _, want := range []string{"JetStream ", "copy in ", "stored in ClickHouse"} {
				if !strings.Contains(hops, want) {
					return fmt.Errorf("phone %d's journey %q has no %q", i+1, hops, want)
				}
			}
			if seq, err := chromedp.Run(ctx, chromedp.Evaluate[int](`Number(document.body.dataset.journeySeq)`)); err != nil || seq != sent[ids[i]] {
				return fmt.Errorf("phone %d's journey is of reading %d, want its last, %d (%v)", i+1, seq, sent[ids[i]], err)
			}
		}
		return nil
	})
	if len(sent) != phones {
		t.Fatalf("%d distinct devices among %d phones", len(sent), phones)
	}
	conn, err := storage.Dial(storage.Config{ClickHouseAddr: addr})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	testharness.CheckFor(t, 60*time.Second, 500*time.Millisecond, func() error {
		rows, err := conn.Query(context.Background(), `SELECT device, uniqExact(seq), count(), countIf(metric = 'tilt_front_deg' AND value = 45)
			FROM telemetry.readings FINAL WHERE device_type = 'phone' GROUP BY device`)
		if err != nil {
			return err
		}
		defer rows.Close()
		stored := 0
		for rows.Next() {
			var dev string
			var readings, n, tilted uint64
			if err := rows.Scan(&dev, &readings, &n, &tilted); err != nil {
				return err
			}
			want, ok := sent[dev]
			if !ok {
				return fmt.Errorf("ClickHouse holds phone %s, which no tab was", dev)
			}
			if readings != uint64(want) || n != 3*uint64(want) || tilted == 0 {
				return fmt.Errorf("phone %s: %d readings (%d rows, %d tilted by 45°) stored, want each of %d once, three metrics each", dev, readings, n, tilted, want)
			}
			stored++
		}
		if stored != phones {
			return fmt.Errorf("ClickHouse holds readings of %d phones, want %d", stored, phones)
		}
		return rows.Err()
	})

	// The presenter removes every phone with one click.
	dash, cancel := chromedp.NewContext(browser)
	defer cancel()
	if err := chromedp.Do(dash, chromedp.Navigate(url+"/#token="+testToken), chromedp.WaitVisible("#presenter-remove-phones")); err != nil {
		t.Fatalf("opening the presenter panel: %v", err)
	}
	// Beside the buttons, the QR code of the join link.
	var qrBefore string
	testharness.CheckFor(t, 10*time.Second, 100*time.Millisecond, func() error {
		var err error
		qrBefore, err = chromedp.Run(dash, chromedp.Evaluate[string](`(() => { const q = document.getElementById("presenter-join-qr"); return !q.hidden && q.complete && q.naturalWidth > 0 ? q.src : ""; })()`))
		if err != nil || qrBefore == "" {
			return fmt.Errorf("the presenter panel shows no QR code of the join link (%v)", err)
		}
		return nil
	})
	if err := chromedp.Do(dash, chromedp.Click("#presenter-remove-phones")); err != nil {
		t.Fatalf("clicking remove all phones: %v", err)
	}
	want := fmt.Sprintf("removed %d phones (%d disconnected)", phones, phones)
	testharness.CheckFor(t, 10*time.Second, 100*time.Millisecond, func() error {
		phase, err := chromedp.Run(dash, chromedp.Evaluate[string](`document.getElementById("presenter-phase").textContent`))
		if err != nil || !strings.HasPrefix(phase, want) {
			return fmt.Errorf("the presenter panel says %q, want %q (%v)", phase, want, err)
		}
		if qr, err := chromedp.Run(dash, chromedp.Evaluate[string](`document.getElementById("presenter-join-qr").src`)); err != nil || qr == qrBefore {
			return fmt.Errorf("the panel's QR code is still the one of before the removal (%v)", err)
		}
		return nil
	})
	testharness.CheckFor(t, 30*time.Second, 250*time.Millisecond, func() error {
		for i, ctx := range tabs {
			if _, e := acked(ctx); !strings.Contains(e, "no longer a device") {
				return fmt.Errorf("phone %d says %q, want that it is no longer a device", i+1, e)
			}
		}
		return nil
	})
	if err := chromedp.Do(tabs[0], chromedp.Reload(), chromedp.WaitVisible("#join-expired")); err != nil {
		t.Errorf("the join link after the removal does not open the expired page: %v", err)
	}
}
