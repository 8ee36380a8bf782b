-- Argo CD health of optiinfra.io/Recommendation (see docs/argocd.md).
-- Healthy once Succeeded; Suspended while it waits for a person (a decision, or the start
-- of its plan); Progressing while the operator works on it; Degraded once it ended short
-- of being carried out, or is Blocked.
local hs = {status = "Progressing", message = "Waiting for the operator to evaluate it"}
if obj.status == nil or obj.status.phase == nil then
  return hs
end
local observed = obj.status.observedGeneration
if observed ~= nil and obj.metadata.generation ~= nil and observed ~= obj.metadata.generation then
  hs.message = "Waiting for the operator to evaluate generation " .. obj.metadata.generation
  return hs
end
local phase = obj.status.phase
hs.message = phase
if obj.status.message ~= nil and obj.status.message ~= "" then
  hs.message = phase .. ": " .. obj.status.message
end
if phase == "Succeeded" then
  hs.status = "Healthy"
elseif phase == "AwaitingApproval" then
  hs.status = "Suspended"
elseif phase == "Approved" then
  if obj.spec ~= nil and obj.spec.executeNow == true then
    hs.status = "Progressing"
  else
    hs.status = "Suspended"
  end
elseif phase == "Pending" or phase == "Executing" or phase == "Superseded" then
  hs.status = "Progressing"
elseif phase == "Blocked" or phase == "Rejected" or phase == "Expired"
    or phase == "Failed" or phase == "RolledBack" then
  hs.status = "Degraded"
else
  hs.status = "Unknown"
  hs.message = "Unknown phase " .. phase
end
return hs
