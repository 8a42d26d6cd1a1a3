package sas_test

import (
	"fmt"

	"github.com/edgetpm/edgetpm/internal/sas"
)

func ExampleParsePolicy() {
	c, err := sas.ParsePolicy("HostName=lab-dps.azure-devices-provisioning.net;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=a2V5")
	if err != nil {
		panic(err)
	}
	fmt.Println(c.HostName, c.KeyName, len(c.Key))

	_, err = sas.ParsePolicy("HostName=h;SharedAccessKeyName=p;SharedAccessKey=secret!")
	fmt.Println(err)
	// Output:
	// lab-dps.azure-devices-provisioning.net provisioningserviceowner 3
	// bad service connection string: SharedAccessKey is not standard base64
}
