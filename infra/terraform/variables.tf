variable "project_id" {
  description = "Google Cloud project of the jobs; also the prefix of bucket names (<project_id>-data, ...)."
  type        = string
}

variable "region" {
  description = "Region of the buckets, the image repository, the BigQuery dataset and the Dataflow jobs."
  type        = string
  default     = "europe-west4"
}

variable "kfp_on_gke" {
  description = "KFP on a GKE cluster of this project with Workload Identity runs the pipelines: its task pods act as the pipeline runner. false (Vertex AI Pipelines only): no Workload Identity binding, which a project without such a cluster refuses."
  type        = bool
  default     = false
}

variable "kfp_namespace" {
  description = "Kubernetes namespace whose KFP task pods run as the pipeline runner (Workload Identity; with kfp_on_gke)."
  type        = string
  default     = "kubeflow"
}

variable "kfp_service_account" {
  description = "Kubernetes service account of the KFP task pods, mapped to the pipeline runner account (with kfp_on_gke)."
  type        = string
  default     = "pipeline-runner"
}

variable "incoming_retention_days" {
  description = "Days the incoming shards to score are kept after upload."
  type        = number
  default     = 180
}

variable "scratch_retention_days" {
  description = "Days pipeline artifacts and Dataflow temp/staging files are kept."
  type        = number
  default     = 30
}

variable "staging_retention_days" {
  description = "Days a scoring attempt's staged files may stay in the tables bucket (an attempt killed before cleaning up)."
  type        = number
  default     = 7
}

variable "noncurrent_retention_days" {
  description = "Days a replaced or deleted object version stays restorable."
  type        = number
  default     = 30
}

variable "analysts" {
  description = "Members who query the tables (\"group:analysts@example.com\", ...): read the tables bucket and the BigQuery views, run query jobs."
  type        = list(string)
  default     = []
}

variable "pipeline_submitters" {
  description = "Members who submit pipeline runs and schedules to Vertex AI Pipelines as the runner account (a release pipeline's account, an operator group)."
  type        = list(string)
  default     = []
}

variable "dataflow_subnetwork" {
  description = "An existing subnetwork for the Dataflow workers (https://www.googleapis.com/compute/v1/projects/HOST/regions/REGION/subnetworks/NAME; of a Shared VPC, the worker account needs roles/compute.networkUser there, granted by the host project). Empty: a network and subnetwork with Private Google Access are created (network.tf)."
  type        = string
  default     = ""
}

variable "dataflow_subnetwork_has_private_google_access" {
  description = "Whether the existing var.dataflow_subnetwork has Private Google Access: only then do the workers run without public IPs."
  type        = bool
  default     = false
}

variable "dataflow_subnetwork_cidr" {
  description = "IP range of the subnetwork created for the Dataflow workers (when var.dataflow_subnetwork is empty)."
  type        = string
  default     = "10.64.0.0/20"
}

variable "storage_data_access_logs" {
  description = "Turn on Data Access audit logs (reads and writes of objects) for Cloud Storage in the project. Authoritative for that one service: leave false where the organization or another configuration manages them."
  type        = bool
  default     = false
}

variable "notification_channels" {
  description = "Cloud Monitoring notification channel ids (projects/PROJECT/notificationChannels/ID) that the failed-pipeline alert notifies; empty: the alert opens incidents in the console only."
  type        = list(string)
  default     = []
}
