-- Argo CD health of optiinfra.io/ExecutionPlan (see docs/argocd.md).
-- Healthy once Succeeded; Suspended while spec.suspend keeps it from starting; Progressing
-- while it waits for its dependencies, runs or rolls back; Degraded once Failed or
-- RolledBack.
local hs = {status = "Progressing", message = "Waiting for the operator to start it"}
if obj.status == nil or obj.status.phase == nil then
  return hs
end
local observed = obj.status.observedGeneration
if observed ~= nil and obj.metadata.generation ~= nil and observed ~= obj.metadata.generation then
  hs.message = "Waiting for the operator to observe generation " .. obj.metadata.generation
  return hs
end
local phase = obj.status.phase
hs.message = phase
if obj.status.message ~= nil and obj.status.message ~= "" then
  hs.message = phase .. ": " .. obj.status.message
end
if phase == "Succeeded" then
  hs.status = "Healthy"
elseif phase == "Pending" then
  if obj.spec ~= nil and obj.spec.suspend == true then
    hs.status = "Suspended"
  else
    hs.status = "Progressing"
  end
elseif phase == "Running" or phase == "Verifying" or phase == "RollingBack" then
  hs.status = "Progressing"
elseif phase == "Failed" or phase == "RolledBack" then
  hs.status = "Degraded"
else
  hs.status = "Unknown"
  hs.message = "Unknown phase " .. phase
end
return hs
