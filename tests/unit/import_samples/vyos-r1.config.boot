/* The same router as vyos-r1.commands, in the config.boot form */
high-availability {
    vrrp {
        global-parameters {
            garp {
                master-repeat 3
            }
        }
        group LAN {
            address 192.168.100.1/24 {
            }
            excluded-address 2001:db8:aa::1/64
            health-check {
                failure-count 3
                interval 60
                script /config/scripts/vrrp-check.sh
            }
            interface eth1
            preempt-delay 180
            priority 200
            rfc3768-compatibility
            vrid 2
        }
        group WAN {
            address 10.10.0.101/24 {
            }
            advertise-interval 1
            authentication {
                password s3cret
                type plaintext-password
            }
            interface eth0
            priority 200
            rfc3768-compatibility
            track {
                interface eth1
            }
            transition-script {
                backup "/config/scripts/vrrp-fail.sh WAN"
                master "/config/scripts/vrrp-master.sh WAN"
            }
            vrid 1
        }
        sync-group MAIN {
            member WAN
            member LAN
        }
    }
}
interfaces {
    ethernet eth0 {
        address 10.10.0.2/24
        description WAN
    }
    ethernet eth1 {
        address 192.168.100.2/24
    }
    ethernet eth2 {
        address 172.16.0.1/30
    }
}
nat {
    source {
        rule 100 {
            outbound-interface eth0
            source {
                address 192.168.100.0/24
            }
            translation {
                address 10.10.0.101
            }
        }
    }
}
service {
    conntrack-sync {
        accept-protocol tcp,udp,icmp
        event-listen-queue-size 8
        failover-mechanism {
            vrrp {
                sync-group MAIN
            }
        }
        ignore-address 172.16.0.0/30
        ignore-address 192.168.100.1
        interface eth2 {
            peer 172.16.0.2
        }
        sync-queue-size 8
    }
}
// vyos-config-version: "broadcast-relay@1:cluster@1:config-management@1"
