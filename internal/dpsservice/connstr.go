package dpsservice

import "github.com/edgetpm/edgetpm/internal/sas"

// ConnectionString is a DPS shared access policy (docs/dps-protocol.md#service-api):
//
//	HostName=<dps>.azure-devices-provisioning.net;SharedAccessKeyName=<policy>;SharedAccessKey=<base64>
//
// Parse one with sas.ParsePolicy.
type ConnectionString = sas.Policy
