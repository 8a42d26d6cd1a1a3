package sas

import "strings"

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
