// kubevirt-install prints what virt-operator would install for KubeVirt v1.8.0, so the e2e harness
// can run KubeVirt's real virt-api and virt-controller without virt-operator (which needs a kubelet
// for its Deployments and the virt-handler DaemonSet). Everything comes from KubeVirt's own
// generators, the ones virt-operator calls (pkg/virt-operator/resource/generate/install
// GenerateCurrentInstallStrategy, components, rbac); nothing here describes KubeVirt by hand except
// which of the strategy's objects a harness without pods needs, and the certificates, which
// virt-operator's certificate manager would make (pkg/virt-operator/resource/apply/certificates.go)
// with the same population strategies (components.PopulateSecretWithCertificate).
//
//	kubevirt-install crds --cdi-crds FILE       every CRD virt-operator installs (KubeVirt's own
//	                                            included), and CDI's five that virt-controller
//	                                            watches once the DataVolume CRD exists, read from
//	                                            CDI's pkg/operator/resources/crds_generated.go
//	                                            (its CRDs as YAML strings; importing the package
//	                                            would pull CDI's module graph into KubeVirt's)
//	kubevirt-install objects --cert-dir DIR     namespace, RBAC, Services, certificates, CA bundles,
//	    [--namespace kubevirt]                  APIServices, admission webhooks, virt-handler's
//	                                            DaemonSet, the KubeVirt CR;
//	    [--feature-gates Snapshot,...]          the certificates also as files in DIR for the
//	                                            processes (virt-api, virt-controller, the players)
//
// Output: one JSON object of kind List on stdout.
package main

import (
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/yaml"

	virtv1 "kubevirt.io/api/core/v1"

	"kubevirt.io/kubevirt/pkg/virt-operator/resource/generate/components"
	"kubevirt.io/kubevirt/pkg/virt-operator/resource/generate/install"
	operatorutil "kubevirt.io/kubevirt/pkg/virt-operator/util"
)

// The CDI CRDs virt-controller starts informers for when the DataVolume CRD exists
// (pkg/virt-controller/watch/application.go: datavolumes, cdis, cdiconfigs, datasources,
// storageprofiles): all five or none, or its caches never sync.
var cdiCRDs = []string{"datavolume", "cdi", "cdiconfig", "datasource", "storageprofile"}

func main() {
	if len(os.Args) < 2 {
		fail("usage: kubevirt-install crds | objects --cert-dir DIR [--namespace NS] [--feature-gates A,B]")
	}
	var items []interface{}
	switch os.Args[1] {
	case "crds":
		flags := flag.NewFlagSet("crds", flag.ExitOnError)
		cdiSource := flags.String("cdi-crds", "", "CDI's pkg/operator/resources/crds_generated.go (module kubevirt.io/containerized-data-importer)")
		_ = flags.Parse(os.Args[2:])
		if *cdiSource == "" {
			fail("crds: --cdi-crds is required")
		}
		items = crds(*cdiSource)
	case "objects":
		flags := flag.NewFlagSet("objects", flag.ExitOnError)
		namespace := flags.String("namespace", "kubevirt", "the install namespace (KubeVirt's processes outside a pod always use kubevirt)")
		certDir := flags.String("cert-dir", "", "where the certificates are written as files")
		gates := flags.String("feature-gates", "", "spec.configuration.developerConfiguration.featureGates of the KubeVirt CR")
		days := flags.Int("cert-days", 30, "how long the certificates are valid")
		_ = flags.Parse(os.Args[2:])
		if *certDir == "" {
			fail("objects: --cert-dir is required")
		}
		items = objects(*namespace, *certDir, *gates, time.Duration(*days)*24*time.Hour)
	default:
		fail("unknown command " + os.Args[1])
	}
	out := map[string]interface{}{"apiVersion": "v1", "kind": "List", "items": unique(items)}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fail(err.Error())
	}
}

// unique drops repeats of an object (the install strategy lists the CA ConfigMaps twice).
func unique(items []interface{}) []interface{} {
	seen := map[string]bool{}
	var kept []interface{}
	for _, item := range items {
		raw, ok := item.(map[string]interface{})
		if !ok {
			fail(fmt.Sprintf("not an object: %T", item))
		}
		metadata, _ := raw["metadata"].(map[string]interface{})
		key := fmt.Sprintf("%v/%v/%v/%v", raw["kind"], metadata["namespace"], metadata["name"], raw["apiVersion"])
		if seen[key] {
			continue
		}
		seen[key] = true
		kept = append(kept, item)
	}
	return kept
}

func fail(message string) {
	fmt.Fprintln(os.Stderr, "kubevirt-install: "+message)
	os.Exit(2)
}

func must(err error) {
	if err != nil {
		fail(err.Error())
	}
}

func kubevirtCR(namespace, gates string) *virtv1.KubeVirt {
	kv := &virtv1.KubeVirt{
		TypeMeta:   metav1.TypeMeta{APIVersion: virtv1.GroupVersion.String(), Kind: "KubeVirt"},
		ObjectMeta: metav1.ObjectMeta{Name: "kubevirt", Namespace: namespace},
	}
	if gates != "" {
		kv.Spec.Configuration.DeveloperConfiguration = &virtv1.DeveloperConfiguration{FeatureGates: strings.Split(gates, ",")}
	}
	return kv
}

func strategy(namespace string) *install.Strategy {
	config := operatorutil.GetTargetConfigFromKV(kubevirtCR(namespace, ""))
	s, err := install.GenerateCurrentInstallStrategy(config, "", namespace)
	must(err)
	return s
}

func crds(cdiSource string) []interface{} {
	var items []interface{}
	for _, crd := range strategy("kubevirt").CRDs() {
		items = append(items, typed(crd, "apiextensions.k8s.io/v1", "CustomResourceDefinition"))
	}
	kv, err := components.NewKubeVirtCrd()
	must(err)
	items = append(items, typed(kv, "apiextensions.k8s.io/v1", "CustomResourceDefinition"))
	cdi := cdiCRDTexts(cdiSource)
	for _, name := range cdiCRDs {
		text, ok := cdi[name]
		if !ok {
			fail("CDI has no CRD " + name)
		}
		var crd map[string]interface{}
		must(yaml.Unmarshal([]byte(text), &crd))
		items = append(items, crd)
	}
	return items
}

// cdiCRDTexts reads the map literal CDICRDs (name → CRD YAML) of CDI's crds_generated.go.
func cdiCRDTexts(path string) map[string]string {
	file, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
	must(err)
	texts := map[string]string{}
	ast.Inspect(file, func(node ast.Node) bool {
		pair, ok := node.(*ast.KeyValueExpr)
		if !ok {
			return true
		}
		key, keyOK := pair.Key.(*ast.BasicLit)
		if !keyOK || key.Kind != token.STRING {
			return true
		}
		name, err1 := strconv.Unquote(key.Value)
		text, err2 := stringValue(pair.Value)
		if err1 == nil && err2 == nil {
			texts[name] = text
		}
		return false
	})
	return texts
}

// stringValue is a string literal or a concatenation of them (generated code writes a backtick as
// ` + "`" + `, which a raw string cannot hold).
func stringValue(expr ast.Expr) (string, error) {
	switch e := expr.(type) {
	case *ast.BasicLit:
		if e.Kind != token.STRING {
			return "", fmt.Errorf("not a string")
		}
		return strconv.Unquote(e.Value)
	case *ast.BinaryExpr:
		left, err := stringValue(e.X)
		if err != nil {
			return "", err
		}
		right, err := stringValue(e.Y)
		return left + right, err
	case *ast.ParenExpr:
		return stringValue(e.X)
	}
	return "", fmt.Errorf("not a string expression")
}

func objects(namespace, certDir, gates string, validity time.Duration) []interface{} {
	s := strategy(namespace)
	var items []interface{}
	items = append(items, typed(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, "v1", "Namespace"))
	for _, o := range s.ServiceAccounts() {
		items = append(items, typed(o, "v1", "ServiceAccount"))
	}
	for _, o := range s.ClusterRoles() {
		items = append(items, typed(o, "rbac.authorization.k8s.io/v1", "ClusterRole"))
	}
	for _, o := range s.ClusterRoleBindings() {
		items = append(items, typed(o, "rbac.authorization.k8s.io/v1", "ClusterRoleBinding"))
	}
	for _, o := range s.Roles() {
		items = append(items, typed(o, "rbac.authorization.k8s.io/v1", "Role"))
	}
	for _, o := range s.RoleBindings() {
		items = append(items, typed(o, "rbac.authorization.k8s.io/v1", "RoleBinding"))
	}

	// Certificates, as virt-operator's certificate manager makes them.
	duration := &metav1.Duration{Duration: validity}
	caSecrets := components.NewCACertSecrets(namespace)
	var ca *tls.Certificate
	bundles := map[string][]byte{}
	for _, secret := range caSecrets {
		must(components.PopulateSecretWithCertificate(secret, nil, duration))
		bundles[secret.Name] = secret.Data[corev1.TLSCertKey]
		if secret.Name == components.KubeVirtCASecretName {
			loaded, err := components.LoadCertificates(secret)
			must(err)
			ca = loaded
		}
		items = append(items, typed(secret, "v1", "Secret"))
	}
	caBundle := bundles[components.KubeVirtCASecretName]
	for _, secret := range s.CertificateSecrets() {
		if secret.Data != nil || isCA(secret.Name, caSecrets) {
			continue
		}
		if err := components.PopulateSecretWithCertificate(secret, ca, duration); err != nil {
			// A secret of a component this harness does not run (e.g. virt-template): leave it out.
			continue
		}
		items = append(items, typed(secret, "v1", "Secret"))
		dir := filepath.Join(certDir, secret.Name)
		must(os.MkdirAll(dir, 0o700))
		must(os.WriteFile(filepath.Join(dir, corev1.TLSCertKey), secret.Data[corev1.TLSCertKey], 0o600))
		must(os.WriteFile(filepath.Join(dir, corev1.TLSPrivateKeyKey), secret.Data[corev1.TLSPrivateKeyKey], 0o600))
	}
	must(os.WriteFile(filepath.Join(certDir, "ca-bundle.crt"), caBundle, 0o600))
	for _, cm := range s.ConfigMaps() {
		if bundle, ok := bundles[cm.Name]; ok {
			cm.Data = map[string]string{components.CABundleKey: string(bundle)}
		} else if cm.Name == components.ExternalKubeVirtCAConfigMapName {
			cm.Data = map[string]string{components.CABundleKey: ""}
		}
		items = append(items, typed(cm, "v1", "ConfigMap"))
	}

	for _, service := range s.Services() {
		if service.Name != components.VirtApiServiceName {
			continue // metrics, export proxy and the operator's webhook: nothing serves them here
		}
		// virt-api runs as a process of the harness, not as a pod: its endpoints are given by hand.
		service.Spec.Selector = nil
		items = append(items, typed(service, "v1", "Service"))
	}
	for _, apiService := range s.APIServices() {
		apiService.Spec.CABundle = caBundle
		items = append(items, typed(apiService, "apiregistration.k8s.io/v1", "APIService"))
	}
	for _, webhook := range s.MutatingWebhookConfigurations() {
		if webhook.Name == components.VirtLauncherPodMutatingWebhookName {
			continue // installed by virt-operator only with the ContainerPathVolumes gate
		}
		for i := range webhook.Webhooks {
			webhook.Webhooks[i].ClientConfig.CABundle = caBundle
		}
		items = append(items, typed(webhook, "admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration"))
	}
	for _, webhook := range s.ValidatingWebhookConfigurations() {
		if webhook.Name != components.VirtAPIValidatingWebhookName {
			continue // the operator's own webhook: no virt-operator runs here
		}
		for i := range webhook.Webhooks {
			webhook.Webhooks[i].ClientConfig.CABundle = caBundle
		}
		items = append(items, typed(webhook, "admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration"))
	}
	// The priority class KubeVirt's pods ask for (virt-operator creates it first).
	items = append(items, typed(components.NewKubeVirtPriorityClassCR(), "scheduling.k8s.io/v1", "PriorityClass"))
	// virt-handler's DaemonSet: the controller manager puts a virt-handler pod on every node, which
	// the node's player runs (kwok, or the QEMU host); virt-api finds virt-handler by those pods.
	for _, daemonSet := range s.DaemonSets() {
		items = append(items, typed(daemonSet, "apps/v1", "DaemonSet"))
	}
	items = append(items, typed(kubevirtCR(namespace, gates), virtv1.GroupVersion.String(), "KubeVirt"))
	return items
}

func isCA(name string, cas []*corev1.Secret) bool {
	for _, ca := range cas {
		if ca.Name == name {
			return true
		}
	}
	return false
}

// typed is the object as JSON would carry it, with apiVersion and kind set (KubeVirt's generators
// leave them empty on some objects), and no status or creationTimestamp.
func typed(object interface{}, apiVersion, kind string) map[string]interface{} {
	raw, err := runtime.DefaultUnstructuredConverter.ToUnstructured(object)
	must(err)
	raw["apiVersion"] = apiVersion
	raw["kind"] = kind
	delete(raw, "status")
	if metadata, ok := raw["metadata"].(map[string]interface{}); ok {
		delete(metadata, "creationTimestamp")
	}
	return raw
}
