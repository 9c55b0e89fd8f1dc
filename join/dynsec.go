package join

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/telemetry-demo/telemetry/internal/broker"
	"github.com/telemetry-demo/telemetry/internal/devicecred"
)

// Bounds of the Mosquitto side of the phones.
const (
	// DefaultReapEvery is how often Dynsec deletes the phones whose
	// credential has ended: Mosquitto keeps a password, not its end, so a
	// phone's login works on Mosquitto up to this long past its end.
	DefaultReapEvery = 15 * time.Second
	// dynsecTimeout bounds one exchange with the plugin.
	dynsecTimeout = 10 * time.Second
)

// DynsecConfig connects the phones to Mosquitto's dynamic security plugin.
type DynsecConfig struct {
	// URL is the broker, tcp://host:port.
	URL string
	// User and Password are the plugin's client that may send it commands
	// (broker.DynsecConfig writes one).
	User, Password string
	// ReapEvery is how often ended phones are deleted; 0:
	// DefaultReapEvery.
	ReapEvery time.Duration
	// Now is the clock; nil: time.Now.
	Now func() time.Time
}

// Dynsec is Mosquitto as the phones' Broker. Mosquitto checks passwords
// against a list and cannot check a phone's ticket, so each phone that
// joins becomes a client of Mosquitto's dynamic security plugin: its user
// name and password, and a role of its own that may publish on its topic
// and nothing else (the plugin refuses its clients everything else by
// default). Dynsec deletes them when their credentials end, and all of
// them when the presenter removes the phones (the plugin disconnects a
// deleted client), and, when it starts, the phones an earlier run left
// behind in the plugin's file.
type Dynsec struct {
	cfg    DynsecConfig
	log    *slog.Logger
	client mqtt.Client

	subscribed chan error // the answers' subscription, made on each connection
	cmd        sync.Mutex // one exchange with the plugin at a time
	next       int        // correlation of the next exchange
	answers    chan dynsecAnswer
	phonesMu   sync.Mutex
	phones     map[string]Credential // by user name, the phones made here
}

type dynsecAnswer struct {
	Responses []struct {
		Command     string          `json:"command"`
		Error       string          `json:"error"`
		Correlation string          `json:"correlationData"`
		Data        json.RawMessage `json:"data"`
	} `json:"responses"`
}

// NewDynsec connects to the plugin and deletes the phones an earlier run
// left behind.
func NewDynsec(cfg DynsecConfig, log *slog.Logger) (*Dynsec, error) {
	if cfg.URL == "" || cfg.User == "" || cfg.Password == "" {
		return nil, errors.New("join: Mosquitto's URL and its dynamic security client's user and password are required")
	}
	if cfg.ReapEvery == 0 {
		cfg.ReapEvery = DefaultReapEvery
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Dynsec{cfg: cfg, log: log.With("component", "join", "broker", "mosquitto"),
		answers: make(chan dynsecAnswer, 1), phones: map[string]Credential{}}
	d.client = mqtt.NewClient(mqtt.NewClientOptions().AddBroker(cfg.URL).SetClientID(cfg.User).
		SetUsername(cfg.User).SetPassword(cfg.Password).SetCleanSession(true).SetAutoReconnect(true).
		SetConnectTimeout(dynsecTimeout).
		SetOnConnectHandler(func(c mqtt.Client) {
			// Subscribed on every connection (the session is clean),
			// before the first command (NewDynsec waits for it).
			tok := c.Subscribe(broker.DynsecTopic+"/response", 1, d.answer)
			go func() {
				tok.WaitTimeout(dynsecTimeout)
				select {
				case d.subscribed <- tok.Error():
				default:
				}
			}()
		}))
	d.subscribed = make(chan error, 1)
	if tok := d.client.Connect(); !tok.WaitTimeout(dynsecTimeout) || tok.Error() != nil {
		return nil, fmt.Errorf("join: logging in to Mosquitto's dynamic security at %s as %s: %w", cfg.URL, cfg.User, cmpErr(tok.Error(), "no answer"))
	}
	select {
	case err := <-d.subscribed:
		if err != nil {
			d.client.Disconnect(100)
			return nil, fmt.Errorf("join: subscribing to Mosquitto's dynamic security answers: %w", err)
		}
	case <-time.After(dynsecTimeout):
		d.client.Disconnect(100)
		return nil, errors.New("join: subscribing to Mosquitto's dynamic security answers: no SUBACK")
	}
	ctx, cancel := context.WithTimeout(context.Background(), dynsecTimeout)
	defer cancel()
	left, err := d.leftovers(ctx)
	if err == nil && len(left) > 0 {
		_, err = d.delete(ctx, left)
		d.log.Info("deleted the phones an earlier run left in Mosquitto", "phones", len(left))
	}
	if err != nil {
		d.client.Disconnect(100)
		return nil, fmt.Errorf("join: Mosquitto's dynamic security: %w", err)
	}
	return d, nil
}

func cmpErr(err error, otherwise string) error {
	if err != nil {
		return err
	}
	return errors.New(otherwise)
}

func (d *Dynsec) answer(_ mqtt.Client, m mqtt.Message) {
	var a dynsecAnswer
	if json.Unmarshal(m.Payload(), &a) != nil {
		return
	}
	select {
	case d.answers <- a:
	default: // nobody waits: the answer to an exchange that timed out
	}
}

// do sends commands in one message and returns the plugin's answers, in
// order, or the first command's error.
func (d *Dynsec) do(ctx context.Context, cmds ...map[string]any) (dynsecAnswer, error) {
	d.cmd.Lock()
	defer d.cmd.Unlock()
	d.next++
	corr := strconv.Itoa(d.next)
	for _, c := range cmds {
		c["correlationData"] = corr
	}
	body, err := json.Marshal(map[string]any{"commands": cmds})
	if err != nil {
		return dynsecAnswer{}, err
	}
	if tok := d.client.Publish(broker.DynsecTopic, 1, false, body); !tok.WaitTimeout(dynsecTimeout) || tok.Error() != nil {
		return dynsecAnswer{}, fmt.Errorf("sending %s: %w", cmds[0]["command"], cmpErr(tok.Error(), "no acknowledgement"))
	}
	for {
		select {
		case a := <-d.answers:
			if len(a.Responses) != len(cmds) || a.Responses[0].Correlation != corr {
				continue // an earlier exchange's, answered late
			}
			for _, r := range a.Responses {
				if r.Error != "" {
					return a, fmt.Errorf("%s: %s", r.Command, r.Error)
				}
			}
			return a, nil
		case <-ctx.Done():
			return dynsecAnswer{}, fmt.Errorf("%s: no answer: %w", cmds[0]["command"], ctx.Err())
		}
	}
}

func roleOf(user string) string { return "phone:" + user }

// Admit makes the phone a client of the plugin, with a role of its own
// that may publish on its topic.
func (d *Dynsec) Admit(ctx context.Context, c Credential) error {
	ctx, cancel := context.WithTimeout(ctx, dynsecTimeout)
	defer cancel()
	_, err := d.do(ctx,
		map[string]any{"command": "createRole", "rolename": roleOf(c.User), "acls": []map[string]any{
			{"acltype": "publishClientSend", "topic": c.Topic, "allow": true, "priority": 0},
		}},
		map[string]any{"command": "createClient", "username": c.User, "password": c.Password,
			"textname": "phone until " + c.Expires.UTC().Format(time.RFC3339),
			"roles":    []map[string]any{{"rolename": roleOf(c.User), "priority": 0}}},
	)
	if err != nil {
		return fmt.Errorf("admitting %s to Mosquitto: %w", c.User, err)
	}
	d.phonesMu.Lock()
	d.phones[c.User] = c
	d.phonesMu.Unlock()
	return nil
}

// delete deletes the phones' clients (which disconnects them) and roles,
// answering how many it deleted.
func (d *Dynsec) delete(ctx context.Context, users []string) (int, error) {
	var errs []error
	n := 0
	for _, u := range users {
		// One exchange per phone: a phone deleted already (its role
		// without a client, after a crash) does not stop the others.
		_, err1 := d.do(ctx, map[string]any{"command": "deleteClient", "username": u})
		_, err2 := d.do(ctx, map[string]any{"command": "deleteRole", "rolename": roleOf(u)})
		if err1 == nil || err2 == nil {
			d.phonesMu.Lock()
			delete(d.phones, u)
			d.phonesMu.Unlock()
			n++
		} else {
			errs = append(errs, err1)
		}
	}
	return n, errors.Join(errs...)
}

// made are the user names of the phones made here that which picks.
func (d *Dynsec) made(which func(Credential) bool) []string {
	d.phonesMu.Lock()
	defer d.phonesMu.Unlock()
	var users []string
	for u, c := range d.phones {
		if which(c) {
			users = append(users, u)
		}
	}
	return users
}

// leftovers are the phones the plugin knows: those of an earlier run.
func (d *Dynsec) leftovers(ctx context.Context) ([]string, error) {
	a, err := d.do(ctx, map[string]any{"command": "listClients", "verbose": false, "count": -1, "offset": 0})
	if err != nil {
		return nil, err
	}
	var data struct {
		Clients []string `json:"clients"`
	}
	if err := json.Unmarshal(a.Responses[0].Data, &data); err != nil {
		return nil, fmt.Errorf("listClients: %w", err)
	}
	var phones []string
	for _, u := range data.Clients {
		if devicecred.IsPhone(u) {
			phones = append(phones, u)
		}
	}
	return phones, nil
}

// RemovePhones deletes every phone whose credential was issued until at;
// the plugin disconnects them. It answers how many it deleted.
func (d *Dynsec) RemovePhones(at time.Time) int {
	users := d.made(func(c Credential) bool { return !c.Issued.After(at) })
	ctx, cancel := context.WithTimeout(context.Background(), 2*dynsecTimeout)
	defer cancel()
	n, err := d.delete(ctx, users)
	if err != nil {
		d.log.Error("removing the phones from Mosquitto", "err", err)
	}
	return n
}

// Run deletes the phones whose credential has ended, every ReapEvery,
// until ctx ends.
func (d *Dynsec) Run(ctx context.Context) error {
	t := time.NewTicker(d.cfg.ReapEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		now := d.cfg.Now()
		ended := d.made(func(c Credential) bool { return !now.Before(c.Expires) })
		if len(ended) == 0 {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 2*dynsecTimeout)
		_, err := d.delete(rctx, ended)
		cancel()
		if err != nil {
			d.log.Warn("deleting ended phones from Mosquitto", "err", err)
		} else {
			d.log.Info("deleted ended phones from Mosquitto", "phones", len(ended))
		}
	}
}

// Close disconnects from the plugin; the phones stay until their
// credentials end (the next run deletes them).
func (d *Dynsec) Close() { d.client.Disconnect(250) }
