# Two identities with least privilege, granted on single buckets and the one repository
# rather than project-wide where the role allows it:
#   pipeline runner  - the KFP task pods: prepare/train write models, score launches Dataflow
#   Dataflow worker  - the scoring workers: read shards and the model, write the tables

resource "google_service_account" "pipeline_runner" {
  account_id   = "fmnist-pipeline-runner"
  display_name = "fmnist KFP pipeline tasks"
  description  = "Runs the fmnist KFP tasks: prepare, train (publishes models), score (launches Dataflow)."
}

resource "google_service_account" "dataflow_worker" {
  account_id   = "fmnist-dataflow-worker"
  display_name = "fmnist Dataflow workers"
  description  = "Runs the Dataflow workers of fmnist score: reads shards and the model, writes the tables."
}

locals {
  runner = "serviceAccount:${google_service_account.pipeline_runner.email}"
  worker = "serviceAccount:${google_service_account.dataflow_worker.email}"

  # bucket -> role -> members. objectViewer reads; objectAdmin also replaces and deletes
  # (prepare's manifest, LATEST, a rerun's partition), which objectCreator cannot.
  bucket_grants = {
    data = {
      "roles/storage.objectViewer" = [local.runner, local.worker] # raw data sets, the shards to score
    }
    models = {
      "roles/storage.objectAdmin"  = [local.runner] # train writes versions and moves LATEST
      "roles/storage.objectViewer" = [local.worker] # score loads the published model
    }
    tables = {
      "roles/storage.objectAdmin"  = [local.worker] # score stages, publishes and replaces partitions
      "roles/storage.objectViewer" = [local.runner] # the task reads the run summary back
    }
    pipelines = {
      "roles/storage.objectAdmin" = [local.runner, local.worker] # task artifacts, Dataflow temp/staging
    }
  }
  buckets = {
    data      = google_storage_bucket.data.name
    models    = google_storage_bucket.models.name
    tables    = google_storage_bucket.tables.name
    pipelines = google_storage_bucket.pipelines.name
  }
  bucket_members = merge([
    for bucket, roles in local.bucket_grants : merge([
      for role, members in roles : {
        for member in members : "${bucket} ${role} ${member}" => { bucket = bucket, role = role, member = member }
      }
    ]...)
  ]...)
}

resource "google_storage_bucket_iam_member" "grants" {
  for_each = local.bucket_members
  bucket   = local.buckets[each.value.bucket]
  role     = each.value.role
  member   = each.value.member
}

# Project-level roles that have no narrower resource to grant on.
resource "google_project_iam_member" "runner" {
  # checkov:skip=CKV_GCP_49: Dataflow grants job creation only per project; acting as an account needs iam.serviceAccountUser, which the runner holds on the worker account alone (below)
  for_each = toset([
    "roles/dataflow.developer", # create and watch the scoring job (no worker or admin rights)
    "roles/logging.logWriter",
  ])
  project = var.project_id
  role    = each.value
  member  = local.runner
}

resource "google_project_iam_member" "worker" {
  for_each = toset([
    "roles/dataflow.worker", # the Dataflow worker's own protocol with the service
    "roles/logging.logWriter",
    "roles/monitoring.metricWriter",
  ])
  project = var.project_id
  role    = each.value
  member  = local.worker
}

# The runner may start Dataflow jobs as the worker account, and nothing else may.
resource "google_service_account_iam_member" "runner_acts_as_worker" {
  service_account_id = google_service_account.dataflow_worker.name
  role               = "roles/iam.serviceAccountUser"
  member             = local.runner
}

# KFP task pods (their Kubernetes service account) act as the runner through Workload Identity:
# no key files exist for either account.
resource "google_service_account_iam_member" "kfp_workload_identity" {
  service_account_id = google_service_account.pipeline_runner.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project_id}.svc.id.goog[${var.kfp_namespace}/${var.kfp_service_account}]"
}

# Both pull the one image (tasks) or its Dataflow worker target (workers) from the repository.
resource "google_artifact_registry_repository_iam_member" "pull" {
  for_each   = { runner = local.runner, worker = local.worker }
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.reader"
  member     = each.value
}
