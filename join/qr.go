package join

import (
	"net"
	"strings"
)

// qrPixels is the QR code's size: large enough to scan from the back of
// a room once a projector enlarges the join view.
const qrPixels = 512

// qrPanelPixels is the size of the QR code in the dashboard's presenter
// panel (/join/qr.png), which shows it smaller.
const qrPanelPixels = 256

// loopbackLink reports whether link names this machine only, where no
// phone can follow it.
func loopbackLink(link string) bool {
	host := strings.TrimPrefix(strings.TrimPrefix(link, "http://"), "https://")
	host, _, _ = strings.Cut(host, "/")
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	ip := net.ParseIP(host)
	return host == "localhost" || ip != nil && ip.IsLoopback()
}
