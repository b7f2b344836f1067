"""The unikernel's network: the virtio-net driver, an IPv4 stack (ARP, ICMP echo, UDP, TCP),
the DHCP client and the socket files the syscall layer hands to apps."""
