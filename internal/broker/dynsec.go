package broker

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
)

// DynsecTopic is where a client of Mosquitto's dynamic security plugin
// sends its commands; the answers come on DynsecTopic + "/response".
const DynsecTopic = "$CONTROL/dynamic-security/v1"

// DynsecConfig is the first configuration of Mosquitto's dynamic security
// plugin (plugin_opt_config_file) for the phones (package join): one
// client, admin with password, whose role may send the plugin its commands
// and read its answers, and nothing else (the file `mosquitto_ctrl dynsec
// init` writes also lets its admin read every topic). Everything else is
// denied to the plugin's clients by default. Users the plugin does not
// know (the devices, ingest, health) are left to the password file and
// the ACL.
func DynsecConfig(admin, password string) ([]byte, error) {
	if admin == "" || password == "" {
		return nil, fmt.Errorf("dynamic security: the admin's user name and password are required")
	}
	salt, sum, err := hashNew(password)
	if err != nil {
		return nil, fmt.Errorf("dynamic security: hashing the admin's password: %w", err)
	}
	type acl struct {
		Type  string `json:"acltype"`
		Topic string `json:"topic"`
		Allow bool   `json:"allow"`
	}
	type role struct {
		Name string `json:"rolename"`
		ACLs []acl  `json:"acls,omitempty"`
	}
	control := DynsecTopic + "/#"
	return json.MarshalIndent(map[string]any{
		"clients": []map[string]any{{
			"username": admin, "textName": "telemetry join (phones)",
			"password": base64.StdEncoding.EncodeToString(sum), "salt": base64.StdEncoding.EncodeToString(salt),
			"iterations": pbkdf2Iterations, "roles": []role{{Name: "phones-admin"}},
		}},
		"roles": []role{{Name: "phones-admin", ACLs: []acl{
			{"publishClientSend", control, true},
			{"publishClientReceive", control, true},
			{"subscribePattern", control, true},
		}}},
		"defaultACLAccess": map[string]bool{
			"publishClientSend": false, "publishClientReceive": false, "subscribe": false, "unsubscribe": true,
		},
	}, "", "  ")
}
