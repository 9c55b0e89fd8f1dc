package cli

import (
	"flag"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// ListVar defines a comma-separated list flag stored in *p, with default
// def (empty items are dropped).
func ListVar(fs *flag.FlagSet, p *[]string, name string, def []string, usage string) {
	*p = slices.Clone(def)
	fs.Var((*list)(p), name, usage)
}

type list []string

func (l *list) String() string { return strings.Join(*l, ",") }

func (l *list) Set(s string) error {
	*l = SplitList(s)
	return nil
}

// RegionURLsVar defines a flag of region=URL items, comma-separated, stored
// in *p: each region's server, as --nats of bench and --nats-regions of
// the dashboard take them.
func RegionURLsVar(fs *flag.FlagSet, p *map[string]string, name, usage string) {
	fs.Var(&regionURLs{p, name}, name, usage)
}

type regionURLs struct {
	p    *map[string]string
	name string
}

func (r *regionURLs) String() string {
	if r.p == nil || len(*r.p) == 0 {
		return ""
	}
	var items []string
	for _, k := range slices.Sorted(maps.Keys(*r.p)) {
		items = append(items, k+"="+(*r.p)[k])
	}
	return strings.Join(items, ",")
}

func (r *regionURLs) Set(s string) error {
	m, err := ParseRegionURLs(s)
	if err != nil {
		return fmt.Errorf("--%s: %w", r.name, err)
	}
	*r.p = m
	return nil
}

// ParseRegionURLs reads region=URL,... into a map. A region of several
// servers lists them all: region=URL,URL,...; an item that names no
// region is one more server of the region before it, and the region's
// value is its URLs joined by commas, as nats.go takes them.
func ParseRegionURLs(s string) (map[string]string, error) {
	out := map[string]string{}
	last := ""
	for _, item := range SplitList(s) {
		r, u, ok := strings.Cut(item, "=")
		if ok && strings.Contains(r, "://") || !ok {
			if last == "" || !strings.Contains(item, "://") {
				return nil, fmt.Errorf("item %q: want region=nats://host:port (then more servers of that region: ,nats://host:port)", item)
			}
			out[last] += "," + item
			continue
		}
		if r == "" || u == "" {
			return nil, fmt.Errorf("item %q: want region=nats://host:port", item)
		}
		out[r], last = u, r
	}
	return out, nil
}
