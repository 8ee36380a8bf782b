{{/* Written by hand (not generated): the helpers the generated templates include. */}}

{{- define "optiinfra.labels" -}}
app.kubernetes.io/part-of: optiinfra-coordinator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end }}

{{/* The flags the values add to `coordinator run` (and the checks of the values). */}}
{{- define "optiinfra.args" -}}
{{- if not (has .Values.mode (list "activeStandby" "shards")) }}{{ fail (printf "mode: %q is not a mode; it is activeStandby or shards" .Values.mode) }}{{ end }}
{{- if and (eq .Values.mode "shards") (lt (int .Values.shards) 1) }}{{ fail "shards: the number of shards (mode: shards) is 1 or more" }}{{ end }}
{{- if not (has .Values.webhookCerts.mode (list "helm" "cert-manager" "external")) }}{{ fail (printf "webhookCerts.mode: %q is none of helm, cert-manager, external" .Values.webhookCerts.mode) }}{{ end }}
{{- range .Values.watchNamespaces }}
- --namespace={{ . }}
{{- end }}
{{- range $risk := list "critical" "high" "medium" "low" }}
{{- with index $.Values.expiry $risk }}
- --expiry-{{ $risk }}={{ . }}
{{- end }}
{{- end }}
{{- with .Values.webhooks.namespaceLabels }}
{{- $pairs := list }}
{{- range $key, $value := . }}{{ $pairs = append $pairs (printf "%s=%s" $key $value) }}{{ end }}
- --webhook-namespace-labels={{ join "," $pairs }}
{{- end }}
{{- range .Values.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}

{{/* The operator's replicas: .Values.replicas (activeStandby) or .Values.shards (shards). */}}
{{- define "optiinfra.replicas" -}}
{{- if eq .Values.mode "shards" }}{{ .Values.shards }}{{ else }}{{ .Values.replicas }}{{ end }}
{{- end }}

{{/* The webhook certificate (webhookCerts.mode helm): the Secret's if it exists (upgrades keep
it), else a new CA and serving certificate. Made once per render, shared by the templates. */}}
{{- define "optiinfra.certs" -}}
{{- if not (hasKey .Values "optiinfraGeneratedCerts") -}}
{{- $service := printf "%s-coordinator" .Values.namePrefix -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (printf "%s-webhook-tls" $service) -}}
{{- if and $existing (hasKey ($existing.data | default dict) "ca.crt") -}}
{{- $_ := set .Values "optiinfraGeneratedCerts" (dict "ca" (index $existing.data "ca.crt") "crt" (index $existing.data "tls.crt") "key" (index $existing.data "tls.key")) -}}
{{- else -}}
{{- $days := int .Values.webhookCerts.validityDays -}}
{{- $ca := genCA (printf "%s-webhook-ca" $service) $days -}}
{{- $dns := list (printf "%s.%s.svc" $service .Release.Namespace) (printf "%s.%s.svc.cluster.local" $service .Release.Namespace) -}}
{{- $cert := genSignedCert (first $dns) nil $dns $days $ca -}}
{{- $_ := set .Values "optiinfraGeneratedCerts" (dict "ca" ($ca.Cert | b64enc) "crt" ($cert.Cert | b64enc) "key" ($cert.Key | b64enc)) -}}
{{- end -}}
{{- end -}}
{{- end }}

{{- define "optiinfra.caBundle" -}}
{{- if eq .Values.webhookCerts.mode "helm" -}}
{{- include "optiinfra.certs" . -}}
caBundle: {{ .Values.optiinfraGeneratedCerts.ca }}
{{- end }}
{{- end }}

{{/* The webhooks' namespaceSelector: the same as the operator writes (--webhook-namespace-labels). */}}
{{- define "optiinfra.namespaceSelector" -}}
{{- with .Values.webhooks.namespaceLabels }}
matchLabels:
  {{- toYaml . | nindent 2 }}
{{- else -}}
{}
{{- end }}
{{- end }}

{{- define "optiinfra.webhookAnnotations" -}}
{{- if eq .Values.webhookCerts.mode "cert-manager" -}}
annotations:
  cert-manager.io/inject-ca-from: {{ .Release.Namespace }}/{{ .Values.namePrefix }}-coordinator-webhook
{{- end }}
{{- end }}
