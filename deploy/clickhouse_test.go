package deploy_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"slices"
	"testing"

	"github.com/telemetry-demo/telemetry/deploy"
)

// chEntry is a user or a settings profile of a ClickHouse users file: the
// element's name is the user's or profile's.
type chEntry struct {
	XMLName   xml.Name
	Password  string   `xml:"password_sha256_hex"`
	Plain     *string  `xml:"password"`
	Profile   string   `xml:"profile"`
	Readonly  string   `xml:"readonly"`
	Databases []string `xml:"allow_databases>database"`
}

// TestClickHouseUsers checks the committed users file against the demo
// passwords of package deploy, and the rights each user is meant to have.
func TestClickHouseUsers(t *testing.T) {
	var f struct {
		XMLName xml.Name
		Users   struct {
			List []chEntry `xml:",any"`
		} `xml:"users"`
		Profiles struct {
			List []chEntry `xml:",any"`
		} `xml:"profiles"`
	}
	if err := xml.Unmarshal(deploy.ClickHouseUsers, &f); err != nil {
		t.Fatalf("clickhouse/users.d/telemetry.xml: %v", err)
	}
	if f.XMLName.Local != "yandex" {
		t.Errorf("root element <%s>: ClickHouse 18.16 reads only <yandex>", f.XMLName.Local)
	}
	find := func(t *testing.T, list []chEntry, name string) chEntry {
		t.Helper()
		for _, e := range list {
			if e.XMLName.Local == name {
				return e
			}
		}
		t.Fatalf("no %q in clickhouse/users.d/telemetry.xml", name)
		return chEntry{}
	}
	for _, tc := range []struct {
		user, password, readonly string
	}{
		{deploy.ClickHouseWriterUser, deploy.DemoClickHouseWriterPassword, ""},
		{deploy.ClickHouseReaderUser, deploy.DemoClickHouseReaderPassword, "1"},
	} {
		t.Run(tc.user, func(t *testing.T) {
			u := find(t, f.Users.List, tc.user)
			sum := sha256.Sum256([]byte(tc.password))
			if u.Password != hex.EncodeToString(sum[:]) {
				t.Errorf("password_sha256_hex %q is not the hash of the demo password %q", u.Password, tc.password)
			}
			if u.Plain != nil {
				t.Errorf("has a plain <password> besides the hash")
			}
			if !slices.Equal(u.Databases, []string{"telemetry"}) {
				t.Errorf("allow_databases %q, want only telemetry", u.Databases)
			}
			if p := find(t, f.Profiles.List, u.Profile); p.Readonly != tc.readonly {
				t.Errorf("profile %s: readonly %q, want %q", u.Profile, p.Readonly, tc.readonly)
			}
		})
	}
}
