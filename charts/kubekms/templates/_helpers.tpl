{{/*
Base name of every object: the release name when it already says "kubekms" (release
"kubekms" gives kubekms-operator, kubekms-engine), otherwise "<release>-kubekms".
*/}}
{{- define "kubekms.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains "kubekms" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-kubekms" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* "<fullname>-<suffix>", kept within 63 characters (the limit of a label value). */}}
{{- define "kubekms.suffixed" -}}
{{- printf "%s-%s" (include "kubekms.fullname" .ctx) .suffix | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kubekms.operatorName" -}}
{{- include "kubekms.suffixed" (dict "ctx" . "suffix" "operator") -}}
{{- end -}}

{{/* The engine ConfigMap the operator reads (--engine-config). */}}
{{- define "kubekms.engineConfigName" -}}
{{- include "kubekms.suffixed" (dict "ctx" . "suffix" "engine") -}}
{{- end -}}

{{- define "kubekms.operatorServiceAccountName" -}}
{{- default (include "kubekms.operatorName" .) .Values.serviceAccount.operator.name -}}
{{- end -}}

{{- define "kubekms.webhookName" -}}
{{- include "kubekms.suffixed" (dict "ctx" . "suffix" "webhook") -}}
{{- end -}}

{{- define "kubekms.webhookServiceAccountName" -}}
{{- default (include "kubekms.webhookName" .) .Values.serviceAccount.webhook.name -}}
{{- end -}}

{{/* The Secret holding the webhook's serving certificate (tls.crt, tls.key, ca.crt). */}}
{{- define "kubekms.webhookTlsSecretName" -}}
{{- include "kubekms.suffixed" (dict "ctx" . "suffix" "webhook-tls") -}}
{{- end -}}

{{- define "kubekms.engineServiceAccountName" -}}
{{- default (include "kubekms.suffixed" (dict "ctx" . "suffix" "engine")) .Values.serviceAccount.engine.name -}}
{{- end -}}

{{/* The one image of both binaries: repository@digest, or repository:tag (default appVersion). */}}
{{- define "kubekms.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) -}}
{{- end -}}
{{- end -}}

{{/*
Selector labels of one component. app.kubernetes.io/name is always "kubekms": the operator
labels the engine pods it creates with exactly these three labels, so the PodDisruptionBudget
and NetworkPolicy selectors here must not depend on any override.
Call with (dict "ctx" . "component" "operator"|"engine").
*/}}
{{- define "kubekms.selectorLabels" -}}
app.kubernetes.io/name: kubekms
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Labels of every object the chart renders. Call like kubekms.selectorLabels. */}}
{{- define "kubekms.labels" -}}
{{ include "kubekms.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: kubekms
{{- end -}}

{{/*
The PodDisruptionBudget API the cluster serves: policy/v1 from Kubernetes 1.21 on,
policy/v1beta1 on 1.20. A live install sees the cluster's kinds (policy/v1/PodDisruptionBudget);
an offline render (helm template) knows only group versions, so there the Kubernetes version
it renders for (--kube-version) decides.
*/}}
{{- define "kubekms.pdbApiVersion" -}}
{{- if .Capabilities.APIVersions.Has "policy/v1/PodDisruptionBudget" -}}
policy/v1
{{- else if and (.Capabilities.APIVersions.Has "policy/v1") (semverCompare ">=1.21.0-0" .Capabilities.KubeVersion.Version) -}}
policy/v1
{{- else -}}
policy/v1beta1
{{- end -}}
{{- end -}}

{{/* An integer, or a percentage string quoted, for minAvailable/maxUnavailable. */}}
{{- define "kubekms.intOrPercent" -}}
{{- if kindIs "string" . -}}
{{ . | quote }}
{{- else -}}
{{ int64 . }}
{{- end -}}
{{- end -}}

{{/* The engine's TLS Secret (its key, for the engine pods only) and its CA's certificate. */}}
{{- define "kubekms.engineTlsSecretName" -}}
{{- include "kubekms.suffixed" (dict "ctx" . "suffix" "engine-tls") -}}
{{- end -}}

{{- define "kubekms.engineCaName" -}}
{{- include "kubekms.suffixed" (dict "ctx" . "suffix" "engine-tls-ca") -}}
{{- end -}}
