package dpsservice_test

import (
	"fmt"

	"github.com/edgetpm/edgetpm/internal/dpsservice"
)

func ExampleParseConnectionString() {
	c, err := dpsservice.ParseConnectionString("HostName=lab-dps.azure-devices-provisioning.net;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=a2V5")
	if err != nil {
		panic(err)
	}
	fmt.Println(c.HostName, c.KeyName, len(c.Key))

	_, err = dpsservice.ParseConnectionString("HostName=h;SharedAccessKeyName=p;SharedAccessKey=secret!")
	fmt.Println(err)
	// Output:
	// lab-dps.azure-devices-provisioning.net provisioningserviceowner 3
	// bad DPS service connection string: SharedAccessKey is not standard base64
}
