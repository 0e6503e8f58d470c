//go:build linux

package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"
	"syscall"
	"time"
)

// capture reads UDP datagrams sent on lo to any of ports for up to d (at
// most max of them) with an AF_PACKET socket, which needs CAP_NET_RAW;
// without it, it returns an error and the gossip class sends garbage only.
func capture(ports []int, d time.Duration, max int) ([][]byte, error) {
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		return nil, err
	}
	const ethPIP = 0x0800
	proto := int(htons(ethPIP))
	fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_DGRAM, proto)
	if err != nil {
		return nil, fmt.Errorf("AF_PACKET socket (needs CAP_NET_RAW): %w", err)
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrLinklayer{Protocol: htons(ethPIP), Ifindex: lo.Index}); err != nil {
		return nil, fmt.Errorf("bind AF_PACKET to lo: %w", err)
	}
	tv := syscall.NsecToTimeval(int64(100 * time.Millisecond))
	syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv)
	var out [][]byte
	buf := make([]byte, 65536)
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) && len(out) < max {
		n, from, err := syscall.Recvfrom(fd, buf, 0)
		if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return out, err
		}
		// On lo each packet is seen going out and coming in; keep one.
		if ll, ok := from.(*syscall.SockaddrLinklayer); ok && ll.Pkttype == syscall.PACKET_OUTGOING {
			continue
		}
		p := buf[:n]
		if len(p) < 20 || p[0]>>4 != 4 || p[9] != syscall.IPPROTO_UDP {
			continue
		}
		ihl := int(p[0]&0xf) * 4
		if len(p) < ihl+8 {
			continue
		}
		dst := int(binary.BigEndian.Uint16(p[ihl+2:]))
		if slices.Contains(ports, dst) {
			out = append(out, append([]byte(nil), p[ihl+8:]...))
		}
	}
	return out, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
