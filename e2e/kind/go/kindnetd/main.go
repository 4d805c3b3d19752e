// Command kindnetd is picchio's minimal stand-in for kind's kindnetd, for the
// offline node image (kind's own kindnetd module is not served by the module
// proxy reachable here).  Pod networking for a kind cluster on one docker
// network:
//
//   - writes the CNI config for this node (ptp + host-local on the node's
//     podCIDR, portmap), so containerd's CRI plugin can wire pods;
//   - keeps a route "podCIDR via nodeIP" to every other node's pods.
//
// No masquerading: every address involved (pods, services, node containers)
// stays inside the cluster's own docker network, and nothing is meant to leave
// the machine.  Runs as a hostNetwork DaemonSet with NET_ADMIN.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

const resync = 5 * time.Second

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func internalIP(n *corev1.Node) net.IP {
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			if ip := net.ParseIP(a.Address); ip != nil && ip.To4() != nil {
				return ip
			}
		}
	}
	return nil
}

// cniConfig is the conflist for this node's pods.
func cniConfig(podCIDR string, mtu int) ([]byte, error) {
	conf := map[string]any{
		"cniVersion": "0.4.0",
		"name":       "kindnet",
		"plugins": []any{
			map[string]any{
				"type":   "ptp",
				"ipMasq": false,
				"mtu":    mtu,
				"ipam": map[string]any{
					"type":    "host-local",
					"dataDir": "/run/cni-ipam-state",
					"routes":  []any{map[string]any{"dst": "0.0.0.0/0"}},
					"ranges":  []any{[]any{map[string]any{"subnet": podCIDR}}},
				},
			},
			map[string]any{"type": "portmap", "capabilities": map[string]any{"portMappings": true}},
		},
	}
	return json.MarshalIndent(conf, "", "  ")
}

func writeAtomic(path string, data []byte) (bool, error) {
	if old, err := os.ReadFile(path); err == nil && string(old) == string(data) {
		return false, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return false, err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return false, err
	}
	return true, os.Rename(tmp, path)
}

func syncRoute(dst *net.IPNet, gw net.IP) error {
	r := &netlink.Route{Dst: dst, Gw: gw}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, r, netlink.RT_FILTER_DST)
	if err == nil {
		for _, have := range routes {
			if have.Gw.Equal(gw) {
				return nil
			}
		}
	}
	log.Printf("route %s via %s", dst, gw)
	return netlink.RouteReplace(r)
}

func main() {
	nodeName := os.Getenv("NODE_NAME")
	if nodeName == "" {
		log.Fatal("NODE_NAME is not set")
	}
	confPath := env("CNI_CONFIG", "/etc/cni/net.d/10-kindnet.conflist")
	mtu := 1500
	if v := os.Getenv("CNI_MTU"); v != "" {
		if _, err := fmt.Sscan(v, &mtu); err != nil {
			log.Fatalf("CNI_MTU=%q: %v", v, err)
		}
	}
	cfg, err := rest.InClusterConfig()
	if err != nil {
		log.Fatalf("in-cluster config: %v", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		log.Fatalf("client: %v", err)
	}
	log.Printf("kindnetd (picchio) on node %s", nodeName)
	for {
		if err := reconcile(cs, nodeName, confPath, mtu); err != nil {
			log.Printf("reconcile: %v", err)
		}
		time.Sleep(resync)
	}
}

func reconcile(cs *kubernetes.Clientset, self, confPath string, mtu int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for i := range nodes.Items {
		n := &nodes.Items[i]
		cidr := n.Spec.PodCIDR
		if cidr == "" {
			continue
		}
		_, dst, err := net.ParseCIDR(cidr)
		if err != nil || dst.IP.To4() == nil {
			continue
		}
		if n.Name == self {
			data, err := cniConfig(cidr, mtu)
			if err != nil {
				return err
			}
			changed, err := writeAtomic(confPath, data)
			if err != nil {
				return err
			}
			if changed {
				log.Printf("wrote %s for podCIDR %s", confPath, cidr)
			}
			continue
		}
		ip := internalIP(n)
		if ip == nil {
			continue
		}
		if err := syncRoute(dst, ip); err != nil {
			log.Printf("route to %s via %s (%s): %v", cidr, ip, n.Name, err)
		}
	}
	return nil
}
