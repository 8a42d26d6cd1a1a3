package ekcert

import (
	"encoding/binary"
	"encoding/hex"
	"strings"
)

// vendors are the TPM manufacturers of the TCG TPM Vendor ID Registry
// (Family 1.2 and 2.0, trustedcomputinggroup.org, "TCG TPM Vendor ID
// Registry"): each ID is four ASCII characters read as a big-endian
// uint32, the value a TPM reports as TPM_PT_MANUFACTURER and its EK
// certificate writes as "id:" and 8 hex digits (TCG EK Credential Profile
// 2.0, "Subject Alternative Name").
var vendors = map[uint32]string{
	0x414D4400: "AMD",                    // "AMD\0"
	0x41544D4C: "Atmel",                  // "ATML"
	0x4252434D: "Broadcom",               // "BRCM"
	0x474F4F47: "Google",                 // "GOOG"
	0x48504500: "HPE",                    // "HPE\0"
	0x49424D00: "IBM",                    // "IBM\0"
	0x49465800: "Infineon",               // "IFX\0"
	0x494E5443: "Intel",                  // "INTC"
	0x4C454E00: "Lenovo",                 // "LEN\0"
	0x4D534654: "Microsoft",              // "MSFT"
	0x4E534D20: "National Semiconductor", // "NSM "
	0x4E545A00: "Nationz",                // "NTZ\0"
	0x4E544300: "Nuvoton",                // "NTC\0"
	0x51434F4D: "Qualcomm",               // "QCOM"
	0x524F4343: "Fuzhou Rockchip",        // "ROCC"
	0x534D5343: "SMSC",                   // "SMSC"
	0x534D534E: "Samsung",                // "SMSN"
	0x534E5300: "Sinosun",                // "SNS\0"
	0x53544D20: "STMicroelectronics",     // "STM "
	0x54584E00: "Texas Instruments",      // "TXN\0"
	0x564D5700: "VMware",                 // "VMW\0"
	0x57454300: "Winbond",                // "WEC\0"
}

// VendorName returns the manufacturer with TCG vendor ID id
// (TPM_PT_MANUFACTURER, 0x49465800 for Infineon), or "" when the registry
// does not list it.
func VendorName(id uint32) string {
	return vendors[id]
}

// parseVendorID reads a TPM manufacturer attribute, "id:" and 8 hex
// digits.
func parseVendorID(s string) (uint32, bool) {
	h, ok := strings.CutPrefix(strings.ToLower(s), "id:")
	if !ok || len(h) != 8 {
		return 0, false
	}
	b, err := hex.DecodeString(h)
	if err != nil {
		return 0, false
	}
	return binary.BigEndian.Uint32(b), true
}
