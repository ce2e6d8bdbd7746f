"""The guide's own client, replayed over real HTTP: only the base URL and the auth header differ.

`GuideApiClient` mirrors the guide's Step 4 `ApiClient` (frontend/src/lib/apiClient.ts) call for
call: same paths, same query strings, same JSON bodies; Step 5's img2img calls are replayed
with the exact payloads the guide shows.
"""

from __future__ import annotations

import json
import uuid
from urllib.parse import urlencode

import httpx

from genstudio.api.app import create_app
from tests.api_support import ServerThread, add_user, make_settings


class GuideApiClient:
    def __init__(self, base_url: str, token: str):
        self.base_url = base_url
        self.token = token

    def request(self, path: str, method: str = "GET", body: str | None = None) -> dict:
        # The guide's `request()`: fetch(base + path) with a JSON content type, parsed as JSON.
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"}
        r = httpx.request(method, self.base_url + path, content=body, headers=headers, timeout=10)
        data = r.json()
        if not r.is_success:
            raise AssertionError(f"{method} {path} -> {r.status_code}: {data}")
        return data

    def createVideoJob(self, payload: dict) -> dict:  # noqa: N802 (the guide's names)
        return self.request("/video-jobs", "POST", json.dumps(payload))

    def getVideoJobs(self, limit: int = 50, offset: int = 0, workflow_name: str | None = None) -> dict:  # noqa: N802
        params = {"limit": str(limit), "offset": str(offset)}
        if workflow_name:
            params["workflow_name"] = workflow_name
        return self.request(f"/video-jobs?{urlencode(params)}")

    def createImageJob(self, payload: dict) -> dict:  # noqa: N802
        return self.request("/image-jobs", "POST", json.dumps(payload))

    def getImageJobs(self, limit: int = 50, offset: int = 0, workflow_name: str | None = None) -> dict:  # noqa: N802
        params = {"limit": str(limit), "offset": str(offset)}
        if workflow_name:
            params["workflow_name"] = workflow_name
        return self.request(f"/image-jobs?{urlencode(params)}")

    def completeImageJob(self, jobId: str, payload: dict) -> dict:  # noqa: N802,N803
        return self.request(f"/image-jobs/{jobId}/complete", "PUT", json.dumps(payload))


def test_guide_client_works_against_the_api(db_url, tmp_path):
    user = add_user(db_url, "studio@example.com")
    with ServerThread(create_app(db_url, make_settings(tmp_path))) as server:
        client = GuideApiClient(server.base_url + "/api", user.token)

        # Step 4: video jobs.
        video = client.createVideoJob({
            "workflow_name": "lipsync-one", "comfy_url": "https://comfy.example", "comfy_job_id": str(uuid.uuid4()),
            "input_image_urls": ["face.png"], "input_audio_urls": ["voice.wav"], "width": 480, "height": 832,
            "parameters": {"trim_to_audio": True},
        })
        assert video["success"] and video["video_job"]["status"] == "pending"
        videos = client.getVideoJobs(50, 0, "lipsync-one")
        assert videos["success"] and [j["id"] for j in videos["video_jobs"]] == [video["video_job"]["id"]]
        assert client.getVideoJobs(50, 0, "wan-i2v")["video_jobs"] == []

        # Step 5: img2img, with the guide's payloads verbatim.
        comfy_url, id_, imageFilename, prompt = "https://comfy.example", str(uuid.uuid4()), "in.png", "a fox"
        created = client.createImageJob({
            "workflow_name": "img2img",
            "comfy_url": comfy_url,
            "comfy_job_id": id_,
            "input_image_urls": [imageFilename],
            "prompt": prompt,
            "parameters": {},
        })
        jobId = created["image_job"]["id"]
        imageUrl, imageInfo = "https://comfy.example/view?filename=out.png", {"filename": "out.png", "subfolder": ""}
        complete_payload = {
            "job_id": jobId,
            "status": "completed",
            "output_image_urls": [imageUrl],
            "comfyui_output_filename": imageInfo["filename"],
            "width": 512,
            "height": 512,
        }
        # `imageInfo.subfolder || undefined`: an empty subfolder is left out by JSON.stringify.
        if imageInfo["subfolder"]:
            complete_payload["comfyui_output_subfolder"] = imageInfo["subfolder"]
        completed = client.completeImageJob(jobId, complete_payload)
        job = completed["image_job"]
        assert completed["success"] and job["status"] == "completed" and job["output_image_urls"] == [imageUrl]
        assert job["completed_at"] and job["processing_time_seconds"] is not None

        listed = client.getImageJobs()
        assert listed["total_count"] == 1 and listed["image_jobs"][0]["id"] == jobId
        assert listed["image_jobs"][0]["input_image_urls"] == [imageFilename]
        # The UnifiedFeed shows both.
        feed = httpx.get(server.base_url + "/api/feed", headers={"Authorization": f"Bearer {user.token}"}).json()
        assert [(i["type"], i["id"]) for i in feed["items"]] == [("image", jobId), ("video", video["video_job"]["id"])]
