package sas

import (
	"errors"
	"fmt"
	"strings"
)

// idSpecials are the characters besides ASCII letters and digits that IoT
// Hub allows in device and module IDs (docs/edge-protocol.md#module-environment).
const idSpecials = "-:.+%_#*?!(),=@;$'"

// ValidID reports whether s is a device or module ID IoT Hub could have
// issued: 1 to 128 ASCII letters, digits and idSpecials. IDs go into
// resources, topics and user names unencoded, so anything else (a '/', a
// space) would address another identity.
func ValidID(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && !strings.ContainsRune(idSpecials, rune(c)) {
			return false
		}
	}
	return true
}

// ValidHostName reports whether s can be a hub's or gateway's host name:
// a DNS name or IPv4 address of letters, digits, '-', '_' and '.'.
func ValidHostName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && c != '-' && c != '_' && c != '.' {
			return false
		}
	}
	return true
}

// ValidDNSName reports whether s is a DNS name as RFC 1123 writes host
// names: dot-separated labels of 1 to 63 ASCII letters, digits and '-',
// none starting or ending with '-', 253 characters at most, no final dot.
// A service connection string's HostName must be one: it goes into URLs,
// token audiences and, for the lab, the hosts file.
func ValidDNSName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !isAlnum(c) && c != '-' {
				return false
			}
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// hubSuffixes are the domains of IoT hubs, one per Azure cloud: the public
// cloud's "{your iot hub name}.azure-devices.net" (IoT Hub endpoints,
// learn.microsoft.com/azure/iot-hub/iot-hub-devguide-endpoints), Azure
// Government's *.azure-devices.us (Azure Government IoT, "Variations") and
// Azure operated by 21Vianet's *.azure-devices.cn (docs.azure.cn IoT Hub
// endpoints). Azure Germany's *.azure-devices.de closed in 2021.
var hubSuffixes = []string{".azure-devices.net", ".azure-devices.us", ".azure-devices.cn"}

// CheckHubHostName returns why host is not an IoT hub's host name, or nil:
// a hub name of 3 to 50 letters, digits and hyphens, neither first nor
// last a hyphen (the portal's rule for the IoT hub name), followed by one
// of the clouds' domains. The lab's and the emulators' hubs
// (lab-hub.azure-devices.net) are named the same way. It is the one rule
// for a hub identity's host name, wherever it is checked.
func CheckHubHostName(host string) error {
	lower := strings.ToLower(host)
	for _, suffix := range hubSuffixes {
		name, ok := strings.CutSuffix(lower, suffix)
		if !ok {
			continue
		}
		if len(name) < 3 || len(name) > 50 || name[0] == '-' || name[len(name)-1] == '-' {
			return fmt.Errorf("the hub name before %s must be 3 to 50 letters, digits or hyphens, not starting or ending with a hyphen", suffix)
		}
		for i := 0; i < len(name); i++ {
			if c := name[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
				return fmt.Errorf("the hub name before %s must be 3 to 50 letters, digits or hyphens", suffix)
			}
		}
		return nil
	}
	return errors.New("the host name is not an IoT hub's: want NAME.azure-devices.net (or .azure-devices.us, .azure-devices.cn), the host name on the hub's overview page")
}
