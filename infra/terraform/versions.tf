# Cloud resources of fmnist-jobs (Google Cloud): buckets, service accounts, the image
# repository, and the BigQuery tables over the scoring output.
#
#   terraform init -backend-config=bucket=<state bucket> -backend-config=prefix=fmnist
#   terraform apply -var project_id=fmnist-prod
#
# Bucket and account names are derived from project_id, the same names the schedules in
# infra/schedules/ use (gs://fmnist-prod-models, ...).
terraform {
  required_version = ">= 1.6"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.0"
    }
  }

  # State lives in a bucket made outside this configuration (it must exist before init).
  backend "gcs" {}
}

provider "google" {
  project = var.project_id
  region  = var.region
}
