# Two identities with least privilege, granted on single buckets and the one repository
# rather than project-wide where the role allows it:
#   pipeline runner  - every pipeline task, on Vertex AI Pipelines (the runs' service account) and
#                      on KFP (the task pods' Kubernetes account, through Workload Identity):
#                      prepare reads raw data, train publishes models, score launches Dataflow
#                      and publishes the tables (lease, staging, parts, run summary)
#   Dataflow worker  - the scoring workers: read shards and the model, stage parts in the tables
# Analysts (var.analysts) read the tables: the Parquet files and the BigQuery views over them.
# tests/test_iam.py runs the pipelines' tasks against a storage server that refuses anything
# these grants do not allow.

resource "google_service_account" "pipeline_runner" {
  account_id   = "fmnist-pipeline-runner"
  display_name = "fmnist KFP pipeline tasks"
  description  = "Runs the fmnist KFP tasks: prepare, train (publishes models), score (launches Dataflow)."

  depends_on = [google_project_service.apis]
}

resource "google_service_account" "dataflow_worker" {
  account_id   = "fmnist-dataflow-worker"
  display_name = "fmnist Dataflow workers"
  description  = "Runs the Dataflow workers of fmnist score: reads shards and the model, writes the tables."

  depends_on = [google_project_service.apis]
}

locals {
  runner = "serviceAccount:${google_service_account.pipeline_runner.email}"
  worker = "serviceAccount:${google_service_account.dataflow_worker.email}"

  # bucket -> role -> members. objectViewer reads (get, list); objectUser also creates,
  # replaces and deletes objects (an overwrite needs delete too), without any right on the
  # bucket itself or its IAM policy.
  # legacyBucketReader adds storage.buckets.get (and list): when an object is not found, the
  # storage layer asks whether its bucket exists, so that a typo in a bucket name is reported
  # as such; it grants no change to the bucket or its policy.
  bucket_grants = {
    data = {
      "roles/storage.objectViewer"       = [local.runner, local.worker] # raw data sets, the shards to score
      "roles/storage.legacyBucketReader" = [local.runner, local.worker]
    }
    models = {
      "roles/storage.objectUser"         = [local.runner] # train writes versions and moves LATEST
      "roles/storage.objectViewer"       = [local.worker] # score loads the published model
      "roles/storage.legacyBucketReader" = [local.runner, local.worker]
    }
    tables = {
      # score's task takes the run's lease, stages, publishes parts, rewrites the summary and
      # removes replaced parts; its workers write the staged parts.
      "roles/storage.objectUser"         = [local.runner, local.worker]
      "roles/storage.legacyBucketReader" = [local.runner, local.worker]
    }
    pipelines = {
      "roles/storage.objectUser"         = [local.runner, local.worker] # task artifacts, Dataflow temp/staging
      "roles/storage.legacyBucketReader" = [local.runner, local.worker]
    }
  }
  # bucket -> roles of every member of var.analysts: the tables, read only.
  analyst_bucket_roles = {
    tables = ["roles/storage.objectViewer", "roles/storage.legacyBucketReader"]
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

  depends_on = [google_project_service.apis]
}

resource "google_storage_bucket_iam_member" "analysts" {
  for_each = merge([
    for bucket, roles in local.analyst_bucket_roles : {
      for pair in setproduct(roles, var.analysts) : "${bucket} ${pair[0]} ${pair[1]}" => {
        bucket = bucket, role = pair[0], member = pair[1]
      }
    }
  ]...)
  bucket = local.buckets[each.value.bucket]
  role   = each.value.role
  member = each.value.member

  depends_on = [google_project_service.apis]
}

# Analysts query the views (dataset read) and run query jobs in this project; BigQuery reads
# the external tables' files with the querying user's own storage rights (granted above).
resource "google_bigquery_dataset_iam_member" "analysts" {
  for_each   = toset(var.analysts)
  dataset_id = google_bigquery_dataset.fmnist.dataset_id
  role       = "roles/bigquery.dataViewer"
  member     = each.value

  depends_on = [google_project_service.apis]
}

resource "google_project_iam_member" "analysts" {
  for_each = toset(var.analysts)
  project  = var.project_id
  role     = "roles/bigquery.jobUser"
  member   = each.value

  depends_on = [google_project_service.apis]
}

# Project-level roles that have no narrower resource to grant on.
resource "google_project_iam_member" "runner" {
  # checkov:skip=CKV_GCP_49: Dataflow grants job creation only per project; acting as an account needs iam.serviceAccountUser, which the runner holds on the worker account alone (below)
  for_each = toset([
    "roles/dataflow.developer", # create, watch and cancel the scoring job (no worker or admin rights)
    "roles/logging.logWriter",
    "roles/aiplatform.user", # Vertex AI Pipelines: the run's own metadata and task executions
  ])
  project = var.project_id
  role    = each.value
  member  = local.runner

  depends_on = [google_project_service.apis]
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

  depends_on = [google_project_service.apis]
}

# The runner may start Dataflow jobs as the worker account, and nothing else may.
resource "google_service_account_iam_member" "runner_acts_as_worker" {
  service_account_id = google_service_account.dataflow_worker.name
  role               = "roles/iam.serviceAccountUser"
  member             = local.runner

  depends_on = [google_project_service.apis]
}

# Who submits runs and schedules (a release pipeline, an operator group) may start Vertex AI
# pipeline runs that act as the runner, and nothing more.
resource "google_project_iam_member" "submitters" {
  for_each = toset(var.pipeline_submitters)
  project  = var.project_id
  role     = "roles/aiplatform.user"
  member   = each.value

  depends_on = [google_project_service.apis]
}

resource "google_service_account_iam_member" "submitters_act_as_runner" {
  for_each           = toset(var.pipeline_submitters)
  service_account_id = google_service_account.pipeline_runner.name
  role               = "roles/iam.serviceAccountUser"
  member             = each.value

  depends_on = [google_project_service.apis]
}

# KFP on GKE (var.kfp_on_gke): the task pods (their Kubernetes service account) act as the runner
# through Workload Identity; on Vertex AI Pipelines the runs name it. The binding names the
# project's identity pool (PROJECT.svc.id.goog), which exists only once a GKE cluster with Workload
# Identity does: a Vertex-only project refuses it. No key files exist for either account.
resource "google_service_account_iam_member" "kfp_workload_identity" {
  count              = var.kfp_on_gke ? 1 : 0
  service_account_id = google_service_account.pipeline_runner.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project_id}.svc.id.goog[${var.kfp_namespace}/${var.kfp_service_account}]"

  depends_on = [google_project_service.apis]
}

# Both pull the one image (tasks) or its Dataflow worker target (workers) from the repository.
resource "google_artifact_registry_repository_iam_member" "pull" {
  for_each   = { runner = local.runner, worker = local.worker }
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.reader"
  member     = each.value

  depends_on = [google_project_service.apis]
}
