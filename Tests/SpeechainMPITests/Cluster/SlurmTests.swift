import Foundation
import Testing
@testable import SpeechainMPI

/// A real Slurm cluster on this machine (scripts/cluster/slurm-cluster.sh: munged, slurmctld and several slurmd,
/// each "node" in its own UTS namespace), to which the batch scripts under slurm/ are submitted unchanged, as a
/// user would: only nodes, tasks per node and the speechain-mpi arguments vary.
struct SlurmCluster {
    let directory: URL
    /// Where jobs are submitted from (their %x-%j.out and results/ land here).
    let submitDirectory: URL
    let environment: [String: String]

    static let clusterScript = ClusterSupport.script("scripts/cluster/slurm-cluster.sh").path

    /// Starts a cluster for `body` and stops it afterwards, also when `body` throws; then checks nothing it started
    /// is still running.
    static func with<T>(nodes: Int, cpusPerNode: Int, _ body: (SlurmCluster) throws -> T) throws -> T {
        try ClusterSupport.cancelUnlessAvailable(ClusterSupport.slurmUnavailable)
        let dir = try TestResources.scratchDirectory("slurm")
        let submit = try TestResources.scratchDirectory("slurm-submit")
        let start = try ClusterSupport.run(clusterScript, ["start", dir.path, "\(nodes)", "\(cpusPerNode)"],
                                           environment: ["SLURM_CLUSTER_OWNER": "\(getpid())", "SLURM_CLUSTER_MAX_SECONDS": "900"],
                                           timeout: 300)
        defer {
            _ = try? ClusterSupport.run(clusterScript, ["stop", dir.path], timeout: 60)
            #expect(leftovers(of: dir).isEmpty, "processes of the cluster still running after stop: \(leftovers(of: dir))")
        }
        guard start.status == 0 else {
            Issue.record("the cluster did not start: \(start.output)")
            throw ExitCode.failure
        }
        let cluster = SlurmCluster(directory: dir, submitDirectory: submit, environment: [
            "SLURM_CONF": dir.appendingPathComponent("slurm.conf").path,
            "SPEECHAIN_BIN": Executable.url.path,
            // Jobs run as root here; on a real cluster neither is needed.
            "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
            // Simulated nodes share one kernel: TCP between them is the robust transport (see the cluster notes).
            "OMPI_MCA_btl": "self,tcp",
        ])
        return try body(cluster)
    }

    enum ExitCode: Error { case failure }

    /// Processes whose command line mentions the cluster's folder (daemons, job steps).
    static func leftovers(of dir: URL) -> [String] {
        guard let r = try? ClusterSupport.run("ps", ["-eo", "pid=,args="], timeout: 20) else { return [] }
        return r.stdout.split(separator: "\n").map(String.init).filter { $0.contains(dir.path + "/") && !$0.contains(" ps ") }
    }

    func command(_ name: String, _ args: [String], extra: [String: String] = [:], timeout: Double = 60) throws -> ClusterSupport.Result {
        try ClusterSupport.run(name, args, environment: environment.merging(extra) { $1 }, directory: submitDirectory, timeout: timeout)
    }

    /// `sbatch --parsable ARGS`: the job id.
    func submit(_ args: [String], extra: [String: String] = [:]) throws -> Int {
        let r = try command("sbatch", ["--parsable"] + args, extra: extra)
        guard r.status == 0, let id = Int(r.stdout.split(separator: ";").first?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "") else {
            Issue.record("sbatch \(args) failed: \(r.output)")
            throw ExitCode.failure
        }
        return id
    }

    /// Polls squeue until the jobs left the queue (bounded), then returns each job's state and exit code.
    func wait(for jobs: [Int], timeout: Double = 240) throws -> [Int: (state: String, exitCode: String)] {
        let deadline = Date().addingTimeInterval(timeout)
        let list = jobs.map(String.init).joined(separator: ",")
        while Date() < deadline {
            let q = try command("squeue", ["-h", "-o", "%i", "-j", list])
            if q.status == 0 && q.stdout.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty { break }
            Thread.sleep(forTimeInterval: 0.3)
        }
        var result: [Int: (String, String)] = [:]
        for job in jobs {
            let s = try command("scontrol", ["show", "job", "\(job)"]).stdout
            func field(_ name: String) -> String {
                s.split(whereSeparator: { $0 == " " || $0 == "\n" }).first { $0.hasPrefix(name + "=") }.map { String($0.dropFirst(name.count + 1)) } ?? "?"
            }
            result[job] = (field("JobState"), field("ExitCode"))
        }
        return result
    }

    func jobOutput(_ name: String, _ job: Int) -> String {
        (try? String(contentsOf: submitDirectory.appendingPathComponent("\(name)-\(job).out"), encoding: .utf8)) ?? "(no output file)"
    }

    func resultFolder(_ name: String, _ job: Int) -> URL {
        submitDirectory.appendingPathComponent("results/\(name)-\(job)", isDirectory: true)
    }
}

@Suite(.serialized, .enabled(if: ClusterSupport.isRoot, "starts munged, slurmctld and slurmd: needs root"))
struct SlurmTests {
    static let mpirunScript = ClusterSupport.script("slurm/train-mpirun.sbatch").path
    static let srunScript = ClusterSupport.script("slurm/train-srun.sbatch").path

    func summary(_ dir: URL) throws -> TrainingSummaryFile {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return try decoder.decode(TrainingSummaryFile.self, from: Data(contentsOf: dir.appendingPathComponent("summary.json")))
    }

    @Test func mpirunScriptTrains16RanksAcross4Nodes() throws {
        try SlurmCluster.with(nodes: 4, cpusPerNode: 4) { cluster in
            // Options from sbatch, speechain-mpi's arguments after the script.
            let job = try cluster.submit(["--nodes", "4", "--ntasks-per-node", "4", Self.mpirunScript,
                                          "--batch_size", "8", "--num_epochs", "2", "--report_per_steps", "8"])
            let state = try cluster.wait(for: [job])[job]
            let log = cluster.jobOutput("speechain", job)
            #expect(state?.state == "COMPLETED" && state?.exitCode == "0:0", "\(String(describing: state)): \(log)")
            let dir = cluster.resultFolder("speechain", job)
            for file in ["summary.json", "model.safetensors", "train.log", "job.txt"] {
                #expect(FileManager.default.fileExists(atPath: dir.appendingPathComponent(file).path), "\(file) missing in \(dir.path): \(log)")
            }
            let s = try summary(dir)
            #expect(s.worldSize == 16)
            // 1024 rows / (8 rows × 16 ranks) = 8 steps per epoch, 2 epochs.
            #expect(s.stepsPerEpoch == 8 && s.steps == 16)
            #expect(s.parameterChecksums.count == 16 && Set(s.parameterChecksums).count == 1, "\(s.parameterChecksums)")
            let jobInfo = try String(contentsOf: dir.appendingPathComponent("job.txt"), encoding: .utf8)
            #expect(jobInfo.contains("nodes=4 nodelist=n[1-4] ntasks=16"), "\(jobInfo)")
            #expect(jobInfo.contains("launcher=mpirun") && jobInfo.contains("finished="), "\(jobInfo)")
            #expect(log.contains("data parallel over 16 ranks"), "\(log)")
        }
    }

    @Test func srunScriptTrainsThroughPMIxWithTheConfigInAVariable() throws {
        try SlurmCluster.with(nodes: 2, cpusPerNode: 4) { cluster in
            let job = try cluster.submit(["-N", "2", "--ntasks-per-node", "2", Self.srunScript],
                                         extra: ["SPEECHAIN_ARGS": "--batch_size 8 --num_epochs 1 --report_per_steps 8"])
            let state = try cluster.wait(for: [job])[job]
            let log = cluster.jobOutput("speechain", job)
            #expect(state?.state == "COMPLETED" && state?.exitCode == "0:0", "\(String(describing: state)): \(log)")
            let dir = cluster.resultFolder("speechain", job)
            let s = try summary(dir)
            #expect(s.worldSize == 4)
            #expect(s.steps == 1024 / (8 * 4))
            #expect(Set(s.parameterChecksums).count == 1)
            let jobInfo = try String(contentsOf: dir.appendingPathComponent("job.txt"), encoding: .utf8)
            #expect(jobInfo.contains("nodes=2 nodelist=n[1-2] ntasks=4") && jobInfo.contains("launcher=srun"), "\(jobInfo)")
            // a failing job is reported as failed, not hidden: a bad option ends every rank with exit 1
            let bad = try cluster.submit(["-N", "1", "--ntasks-per-node", "2", Self.srunScript, "--optim_type", "Adamax"])
            let badState = try cluster.wait(for: [bad])[bad]
            #expect(badState?.state == "FAILED", "\(String(describing: badState))")
            #expect(cluster.jobOutput("speechain", bad).contains("unknown optim_type 'Adamax'"))
        }
    }

    @Test func sweepSubmitsAScalingSeriesAndItsTable() throws {
        try SlurmCluster.with(nodes: 2, cpusPerNode: 4) { cluster in
            let out = cluster.submitDirectory.appendingPathComponent("sweep")
            let dims = [32, 64, 8]
            let r = try cluster.command(ClusterSupport.script("slurm/sweep.sh").path,
                ["--ranks", "1 2 4", "--accum", "4", "--modes", "weak", "--tasks-per-node", "2", "--out", out.path,
                 "--", "--dims", dims.map(String.init).joined(separator: ","), "--gemm_size", "64"])
            #expect(r.status == 0, "\(r.output)")
            let jobs = try String(contentsOf: out.appendingPathComponent("jobs.txt"), encoding: .utf8)
                .split(separator: "\n").compactMap { Int($0.split(separator: " ").first ?? "") }
            #expect(jobs.count == 3)
            let squeue = try cluster.command("squeue", ["-h", "-o", "%i"])
            let all = jobs + squeue.stdout.split(separator: "\n").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
            let states = try cluster.wait(for: Array(Set(all)))
            for (job, s) in states { #expect(s.state == "COMPLETED", "job \(job): \(s)") }
            // P = Σ in·out + out; the sweep times 8 updates (steps = 8 × accum_grad).
            let parameters = zip(dims, dims.dropFirst()).reduce(0) { $0 + $1.0 * $1.1 + $1.1 }
            let decoder = JSONDecoder()
            decoder.keyDecodingStrategy = .convertFromSnakeCase
            var worlds: [Int] = []
            for run in try FileManager.default.contentsOfDirectory(atPath: out.appendingPathComponent("runs").path) {
                let data = try Data(contentsOf: out.appendingPathComponent("runs/\(run)/bench.json"))
                let b = try decoder.decode(ScalingBenchmark.Report.self, from: data)
                worlds.append(b.worldSize)
                #expect(b.configuration.accumGrad == 4 && b.batchPerRank == 64)
                #expect(b.nodes == (b.worldSize + 1) / 2, "\(run): \(b.nodes) nodes")
                #expect(b.allreduceCalls == (b.worldSize > 1 ? 8 : 0))
                #expect(b.allreduceBytes == (b.worldSize > 1 ? 8 * parameters * 4 : 0))
            }
            #expect(worlds.sorted() == [1, 2, 4])
            let csv = try String(contentsOf: out.appendingPathComponent("scaling.csv"), encoding: .utf8)
            let rows = csv.split(separator: "\n").dropFirst().map { $0.split(separator: ",", omittingEmptySubsequences: false) }
            #expect(rows.map { $0[2] } == ["1", "2", "4"], "\(csv)")
        }
    }
}
