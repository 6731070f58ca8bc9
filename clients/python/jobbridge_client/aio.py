"""The asynchronous client: ``Client``'s methods, awaited; ``list`` and ``watch`` are async iterators.

    async with AsyncClient("http://127.0.0.1:8000", token=get_token) as jobs:
        accepted = await jobs.submit("echo", {"hello": "world"})
        async for job in jobs.watch(accepted.job_id):
            print(job.state, job.progress)

``token`` may also be an async callable. Retries, idempotency keys and errors are ``Client``'s.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable

import httpx

from . import _core
from .errors import Conflict, ConnectionFailed, ProblemError, problem_error
from .models import Accepted, Job, JobSummary, Page, State


class _AsyncToken:
    def __init__(self, token: _core.Token) -> None:
        self.source = token
        self.value: str | None = token if isinstance(token, str) else None

    @property
    def refreshable(self) -> bool:
        return callable(self.source)

    async def header(self, refresh: bool = False) -> dict[str, str]:
        if callable(self.source) and (refresh or self.value is None):
            value = self.source()
            self.value = await value if inspect.isawaitable(value) else value  # type: ignore[assignment]
        return {"Authorization": f"Bearer {self.value}"} if self.value else {}


class AsyncClient:
    def __init__(self, base_url: str = "", *, token: _core.Token = None, timeout: float = 30.0,
                 retry: _core.RetryPolicy = _core.RetryPolicy(), transport: httpx.AsyncBaseTransport | None = None,
                 poll: tuple[float, float] = (0.25, 3.0),
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout, transport=transport,
                                       headers={"User-Agent": _core.user_agent()})
        self._token = _AsyncToken(token)
        self._timeout = timeout
        self.retry = retry
        self._poll = poll
        self._sleep = sleep
        self._clock = clock
        self._long_poll = _core.LongPollSupport()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def submit(self, type: str, params: dict[str, Any] | None = None, *, target: str | None = None,
                     priority: int | None = None, requirements: dict[str, Any] | None = None,
                     data_classification: str | None = None, idempotency_key: str | None = None) -> Accepted:
        key = idempotency_key or _core.new_idempotency_key()
        body = _core.submit_body(type, params, target=target, priority=priority, requirements=requirements,
                                 data_classification=data_classification)
        response = await self._request("POST", "/jobs", json=body, headers={"Idempotency-Key": key})
        return _core.accepted_of(response, key)

    async def submit_many(self, jobs: Iterable[dict[str, Any]]) -> list[Accepted | ProblemError]:
        bulk = _core.Bulk(jobs)
        for chunk in bulk.chunks():
            retry = 0
            while chunk:
                again = bulk.record(chunk, await self._request("POST", "/jobs:batch", json=bulk.body(chunk)))
                delay = self.retry.delay(retry) if again else None
                if delay is None:
                    break
                await self._sleep(delay)
                retry, chunk = retry + 1, again
        return bulk.results  # type: ignore[return-value]

    async def get(self, job_id: str) -> Job:
        return Job.of((await self._request("GET", f"/jobs/{job_id}")).json())

    async def list_page(self, *, state: State | str | None = None, type: str | None = None, page_size: int = 20,
                        cursor: str | None = None) -> Page:
        params = _core.list_params(state, type, page_size, cursor)
        return _core.page_of(await self._request("GET", "/jobs", params=params))

    async def list(self, *, state: State | str | None = None, type: str | None = None,
                   page_size: int = 20) -> AsyncIterator[JobSummary]:
        cursor: str | None = None
        while True:
            page = await self.list_page(state=state, type=type, page_size=page_size, cursor=cursor)
            for item in page.items:
                yield item
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    async def cancel(self, job_id: str) -> Job:
        try:
            return Job.of((await self._request("POST", f"/jobs/{job_id}/cancel")).json())
        except Conflict:
            job = await self.get(job_id)
            if job.state is State.CANCELLED:
                return job
            raise

    async def watch(self, job_id: str, *, timeout: float | None = None) -> AsyncIterator[Job]:
        watch = _core.Watch(self._long_poll, self._poll, timeout, self._clock)
        job = await self.get(job_id)
        watch.saw(job)
        yield job
        while not job.state.is_final:
            pause = watch.pause()
            if pause:
                await self._sleep(pause)
            params, hold = watch.params()
            response = await self._request("GET", f"/jobs/{job_id}", params=params, timeout=self._timeout + hold)
            if params:
                self._long_poll.learn(response)
            job = Job.of(response.json())
            if watch.saw(job):
                yield job

    async def wait(self, job_id: str, *, timeout: float | None = None) -> Job:
        job = None
        async for job in self.watch(job_id, timeout=timeout):
            pass
        assert job is not None
        return _core.final_outcome(job)

    async def _request(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None,
                       headers: dict[str, str] | None = None, timeout: float | None = None) -> httpx.Response:
        retry = 0
        refreshed = False
        while True:
            try:
                response = await self._http.request(method, path, json=json, params=params,
                                                    headers={**(headers or {}), **await self._token.header()},
                                                    timeout=timeout or self._timeout)
            except httpx.TransportError as exc:
                delay = self.retry.delay(retry)
                if delay is None:
                    raise ConnectionFailed(f"{method} {path}: {exc!r}") from exc
                await self._sleep(delay)
                retry += 1
                continue
            if response.status_code == 401 and self._token.refreshable and not refreshed:
                await self._token.header(refresh=True)
                refreshed = True
                continue
            if response.status_code in _core.RETRY_STATUSES:
                delay = self.retry.delay(retry, _core.retry_after(response))
                if delay is not None:
                    await self._sleep(delay)
                    retry += 1
                    continue
            if response.is_error:
                raise problem_error(response)
            return response
