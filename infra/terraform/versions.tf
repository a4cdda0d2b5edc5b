# Cloud resources of fmnist-jobs (Google Cloud): APIs, buckets, service accounts, the image
# repository, the Dataflow network, and the BigQuery tables over the scoring output.
#
#   terraform init -backend-config=bucket=<state bucket> -backend-config=prefix=fmnist
#   terraform apply -var project_id=<your project>            # e.g. acme-ml; -var kfp_on_gke=true for KFP on GKE
#   terraform output -json > ../deployments/<your project>.json
#
# Bucket and account names are derived from project_id. The outputs (outputs.tf) are the
# deployment file that `fmnist pipeline compile|submit|resume --deployment` read: the only
# place the pipelines learn a project's names from.
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
