#!/bin/sh
# Baseline image (image/mkosi/baseline/README.md). Sourced by live-boot after
# its own 9990-* components, so these definitions replace live-boot's: like
# linux-live, the boot NIC is the one named by BOOTIF= and it is configured
# from the kernel's ip= by initramfs-tools' configure_networking, instead of
# live-boot probing every NIC for a carrier and running DHCP on it.

# Called by live-boot's Live() before the network mount: only pick the device.
Select_eth_device ()
{
	case "${FETCH}${HTTPFS}${FTPFS}${NETBOOT}" in
	"") return ;;
	esac
	if [ -n "${BOOTIF}" ]
	then
		Device_from_bootif
	fi
	if [ -n "${DEVICE}" ]
	then
		echo "DEVICE=${DEVICE}" >>/conf/param.conf
	fi
}

# Called by live-boot's do_netmount: configure the NIC from ip=/BOOTIF=.
do_netsetup ()
{
	wait_for_udev 10
	configure_networking

	for _conf in /run/net-*.conf
	do
		[ -e "${_conf}" ] || continue
		. "${_conf}"
		DEVICE="${DEVICE:-${_conf#/run/net-}}"
		DEVICE="${DEVICE%.conf}"
		break
	done
	export DEVICE
	echo "baseline: ${DEVICE:-?} configured as ${IPV4ADDR:-?}/${IPV4NETMASK:-?} from ip=${IP}"
}
