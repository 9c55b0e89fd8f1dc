package stream

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// conn connects as user and records the permission violations the server
// reports.
type conn struct {
	nc *nats.Conn
	js jetstream.JetStream

	mu         sync.Mutex
	violations []string
}

func connectAs(t *testing.T, e *Embedded, region, user string) *conn {
	t.Helper()
	c := &conn{}
	nc, err := nats.Connect(e.URLAs(region, user), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		c.mu.Lock()
		c.violations = append(c.violations, err.Error())
		c.mu.Unlock()
	}))
	if err != nil {
		t.Fatalf("connecting as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	c.nc = nc
	c.js, err = jetstream.NewWithDomain(nc, region)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// refusedPublish publishes to subject and waits for the server to report a
// permission violation for it. A JetStream API subject of the local domain
// is checked after the server maps it to $JS.API, so the report names that.
func (c *conn) refusedPublish(t *testing.T, subject string) {
	t.Helper()
	reported := subject
	if i := strings.Index(subject, ".API."); strings.HasPrefix(subject, "$JS.") && i > 0 {
		reported = "$JS" + subject[i:]
	}
	if err := c.nc.Publish(subject, []byte("x")); err != nil {
		t.Fatal(err)
	}
	c.nc.Flush()
	checkFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, v := range c.violations {
			if strings.Contains(strings.ToLower(v), "permissions violation") && strings.Contains(v, `"`+reported+`"`) {
				return nil
			}
		}
		return errors.New("no permission violation reported for " + subject)
	})
}

func TestEachServiceUserHasOnlyItsPermissions(t *testing.T) {
	e := startTestRegions(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	t.Run("ingest publishes its own region only", func(t *testing.T) {
		c := connectAs(t, e, "eu-west", IngestUser("eu-west"))
		msg := &nats.Msg{Subject: "telemetry.eu-west.probe.p-1", Data: []byte("{}")}
		if _, err := c.js.PublishMsg(ctx, msg); err != nil {
			t.Fatalf("ingest publishing its region's reading: %v", err)
		}
		if _, err := c.js.PublishMsg(ctx, &nats.Msg{Subject: "deadletter.eu-west.bad_json", Data: []byte("x")}); err != nil {
			t.Fatalf("ingest publishing its region's dead letter: %v", err)
		}
		c.refusedPublish(t, "telemetry.us-east.probe.p-1")
		c.refusedPublish(t, "$JS.eu-west.API.STREAM.DELETE.READINGS")
		c.refusedPublish(t, "status.ingest.us-east") // another region's heartbeat
	})

	t.Run("dashboard hears every region's ingest heartbeat", func(t *testing.T) {
		// The dashboard connects to its home region; eu-west's ingest
		// beats on its own server, and the hub carries it across.
		dash := connectAs(t, e, "us-east", "dashboard")
		heard := make(chan string, 16)
		sub, err := dash.nc.Subscribe("status.ingest.*", func(m *nats.Msg) { heard <- m.Subject })
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		in := connectAs(t, e, "eu-west", IngestUser("eu-west"))
		checkFor(t, 10*time.Second, 100*time.Millisecond, func() error {
			if err := in.nc.Publish("status.ingest.eu-west", []byte("{}")); err != nil {
				return err
			}
			select {
			case s := <-heard:
				if s != "status.ingest.eu-west" {
					t.Fatalf("heard %s", s)
				}
				return nil
			case <-time.After(100 * time.Millisecond):
				return errors.New("no heartbeat from eu-west heard in us-east")
			}
		})
	})

	t.Run("storage consumes but cannot publish or delete", func(t *testing.T) {
		c := connectAs(t, e, "us-east", "storage")
		cons, err := c.js.CreateOrUpdateConsumer(ctx, ReadingsStream, jetstream.ConsumerConfig{Durable: "storage", AckPolicy: jetstream.AckExplicitPolicy})
		if err != nil {
			t.Fatalf("storage creating its durable consumer: %v", err)
		}
		if _, err := cons.Info(ctx); err != nil {
			t.Fatalf("storage reading its consumer: %v", err)
		}
		c.refusedPublish(t, "telemetry.us-east.probe.p-1")
		c.refusedPublish(t, "$JS.us-east.API.STREAM.DELETE.READINGS")
		c.refusedPublish(t, "$JS.us-east.API.CONSUMER.CREATE.DEADLETTER")
	})

	t.Run("dashboard reads but cannot delete a stream", func(t *testing.T) {
		c := connectAs(t, e, "us-east", "dashboard")
		if _, err := c.js.OrderedConsumer(ctx, ReadingsStream, jetstream.OrderedConsumerConfig{}); err != nil {
			t.Fatalf("dashboard creating an ordered consumer: %v", err)
		}
		other, err := jetstream.NewWithDomain(c.nc, "ap-south")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := other.Stream(ctx, DeadLetterStream); err != nil {
			t.Fatalf("dashboard reading ap-south's DEADLETTER: %v", err)
		}
		c.refusedPublish(t, "$JS.us-east.API.STREAM.DELETE.READINGS")
		c.refusedPublish(t, "$JS.API.STREAM.PURGE.READINGS")
		c.refusedPublish(t, "telemetry.us-east.probe.p-1")
		c.refusedPublish(t, "status.ingest.us-east") // it hears heartbeats, cannot fake one
	})

	t.Run("dashboard cannot touch storage's consumer", func(t *testing.T) {
		// The attack found by hand: the dashboard user pulled and
		// acknowledged readings from storage's durable, which then never
		// reached ClickHouse.
		store := connectAs(t, e, "us-east", "storage")
		cons, err := store.js.CreateOrUpdateConsumer(ctx, ReadingsStream, jetstream.ConsumerConfig{Durable: StorageConsumer, AckPolicy: jetstream.AckExplicitPolicy})
		if err != nil {
			t.Fatalf("storage creating its durable consumer: %v", err)
		}
		before, err := cons.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		in := connectAs(t, e, "us-east", IngestUser("us-east"))
		if _, err := in.js.PublishMsg(ctx, &nats.Msg{Subject: "telemetry.us-east.probe.p-dash", Data: []byte("{}")}); err != nil {
			t.Fatal(err)
		}

		dash := connectAs(t, e, "us-east", "dashboard")
		// Its own job: an ordered consumer of its own gets the reading.
		own, err := dash.js.OrderedConsumer(ctx, ReadingsStream, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy, FilterSubjects: []string{"telemetry.us-east.probe.p-dash"}})
		if err != nil {
			t.Fatalf("dashboard creating its ordered consumer: %v", err)
		}
		if m, err := own.Next(jetstream.FetchMaxWait(5 * time.Second)); err != nil || m.Subject() != "telemetry.us-east.probe.p-dash" {
			t.Fatalf("dashboard reading through its own consumer: %v", err)
		}
		// It may read storage's state (the page shows storage's backlog)...
		theirs, err := dash.js.Consumer(ctx, ReadingsStream, StorageConsumer)
		if err != nil {
			t.Fatalf("dashboard reading storage's consumer state: %v", err)
		}
		// ...but not pull from it, take it over, delete it or acknowledge
		// its messages.
		if msgs, err := theirs.Fetch(1, jetstream.FetchMaxWait(time.Second)); err == nil {
			for m := range msgs.Messages() {
				t.Fatalf("the dashboard pulled %s from storage's consumer", m.Subject())
			}
		}
		dash.refusedPublish(t, "$JS.us-east.API.CONSUMER.MSG.NEXT.READINGS."+StorageConsumer)
		dash.refusedPublish(t, "$JS.us-east.API.CONSUMER.CREATE.READINGS."+StorageConsumer)
		dash.refusedPublish(t, "$JS.us-east.API.CONSUMER.DELETE.READINGS."+StorageConsumer)
		dash.refusedPublish(t, "$JS.us-east.API.CONSUMER.DURABLE.CREATE.READINGS.mine")
		dash.refusedPublish(t, "$JS.ACK.READINGS."+StorageConsumer+".1.1.1.1.0")

		// Storage still gets the reading, delivered to it first.
		after, err := cons.Info(ctx)
		if err != nil {
			t.Fatalf("storage's consumer after the attempts: %v", err)
		}
		// Pending grew by the probe at least: copies of other regions' readings
		// may arrive meanwhile too.
		if after.Delivered.Consumer != before.Delivered.Consumer || after.NumPending < before.NumPending+1 {
			t.Fatalf("storage's consumer delivered %d (was %d), pending %d (was %d): someone else pulled", after.Delivered.Consumer, before.Delivered.Consumer, after.NumPending, before.NumPending)
		}
		msgs, err := cons.Fetch(int(after.NumPending), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got := false
		for m := range msgs.Messages() {
			if err := m.Ack(); err != nil {
				t.Fatalf("storage acknowledging: %v", err)
			}
			got = got || m.Subject() == "telemetry.us-east.probe.p-dash"
		}
		if !got {
			t.Fatal("storage did not get the reading")
		}
	})

	t.Run("storage manages its own consumer only", func(t *testing.T) {
		admin := connectAs(t, e, "us-east", DemoUser)
		if _, err := admin.js.CreateOrUpdateConsumer(ctx, ReadingsStream, jetstream.ConsumerConfig{Durable: "audit", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
			t.Fatal(err)
		}
		store := connectAs(t, e, "us-east", "storage")
		store.refusedPublish(t, "$JS.us-east.API.CONSUMER.DELETE.READINGS.audit")
		store.refusedPublish(t, "$JS.us-east.API.CONSUMER.CREATE.READINGS.audit")
		store.refusedPublish(t, "$JS.us-east.API.CONSUMER.MSG.NEXT.READINGS.audit")
		if _, err := admin.js.Consumer(ctx, ReadingsStream, "audit"); err != nil {
			t.Fatalf("the other consumer after storage's attempts: %v", err)
		}
		// Its own it may delete (storage recreates it when the stream
		// was replaced).
		if _, err := store.js.CreateOrUpdateConsumer(ctx, ReadingsStream, jetstream.ConsumerConfig{Durable: StorageConsumer, AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
			t.Fatal(err)
		}
		if err := store.js.DeleteConsumer(ctx, ReadingsStream, StorageConsumer); err != nil {
			t.Fatalf("storage deleting its own consumer: %v", err)
		}
		if err := admin.js.DeleteConsumer(ctx, ReadingsStream, "audit"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("leaf and system users cannot log in as clients", func(t *testing.T) {
		addr := strings.TrimPrefix(e.URL("us-east"), "nats://"+DemoUser+":"+DemoPassword+"@")
		for _, creds := range []string{"leaf:leaf", "sys:sys"} {
			nc, err := nats.Connect("nats://" + creds + "@" + addr)
			if err == nil {
				nc.Close()
				t.Errorf("%s logged in on a client port", creds)
				continue
			}
			if !strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
				t.Errorf("%s: %v, want an authorization violation", creds, err)
			}
		}
		// The leaf user still does its job: every region's leaf link to
		// the hub is up (sources are active through it).
		rs := connectAll(t, e)
		checkFor(t, 20*time.Second, 100*time.Millisecond, func() error {
			for _, st := range Status(ctx, rs, e.Regions()) {
				for _, src := range st.Sources {
					if !src.Reaches {
						return errors.New(st.Region + " cannot reach " + src.From + " through the hub")
					}
				}
			}
			return nil
		})
	})

	t.Run("the demo's leaf port refuses the public leaf password", func(t *testing.T) {
		before := e.refused.Count(reasonBadLogin)
		intruder, err := server.NewServer(&server.Options{ServerName: "intruder", Host: "127.0.0.1", Port: -1, NoSigs: true,
			LeafNode: server.LeafNodeOpts{ReconnectInterval: 100 * time.Millisecond, Remotes: []*server.RemoteLeafOpts{
				{URLs: []*url.URL{{Scheme: "nats-leaf", User: url.UserPassword("leaf", "leaf"), Host: e.leafAddr}}}}}})
		if err != nil {
			t.Fatal(err)
		}
		intruder.Start()
		defer intruder.Shutdown()
		checkFor(t, 5*time.Second, 50*time.Millisecond, func() error {
			if n := e.refused.Count(reasonBadLogin); n <= before {
				return errors.New("no refused leaf login counted yet")
			}
			return nil
		})
		if n, want := e.hub.NumLeafNodes(), len(e.Regions()); n != want {
			t.Errorf("the hub has %d leaf connections, want its %d regions' only", n, want)
		}
		if n := intruder.NumLeafNodes(); n != 0 {
			t.Errorf("the intruder holds %d leaf connections to the hub", n)
		}
	})

	// Nothing above changed the streams.
	if err := e.Apply(ctx, DefaultTopology(DefaultRegions)); err != nil {
		t.Fatalf("streams after the attempts: %v", err)
	}
}
