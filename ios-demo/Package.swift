// swift-tools-version:5.9
// The iOS demo: QwenEdgeCore (manifest, verification, chat template, thinking budget, sampling, generation loop;
// no UI, tested with XCTest against the Python golden vectors: `swift test`), and the SwiftUI app in App/,
// built as an iOS app product when opened in Xcode or Swift Playgrounds (AppleProductTypes).
import PackageDescription

#if canImport(AppleProductTypes)
import AppleProductTypes
#endif

var products: [Product] = [.library(name: "QwenEdgeCore", targets: ["QwenEdgeCore"])]
var targets: [Target] = [
    .target(name: "QwenEdgeCore", path: "Sources/QwenEdgeCore"),
    .testTarget(name: "QwenEdgeCoreTests", dependencies: ["QwenEdgeCore"], path: "Tests/QwenEdgeCoreTests"),
]

#if canImport(AppleProductTypes)
products.append(.iOSApplication(
    name: "QwenEdge",
    targets: ["QwenEdgeApp"],
    bundleIdentifier: "dev.qwenedge.demo",
    teamIdentifier: "",
    displayVersion: "0.1.0",
    bundleVersion: "1",
    appIcon: .placeholder(icon: .chatMessage),
    accentColor: .presetColor(.teal),
    supportedDeviceFamilies: [.phone, .pad],
    supportedInterfaceOrientations: [.portrait]
))
targets.append(.executableTarget(
    name: "QwenEdgeApp",
    dependencies: ["QwenEdgeCore", .product(name: "Tokenizers", package: "swift-transformers")],
    path: "App",
    resources: [.copy("Bundles")]
))
#endif

let package = Package(
    name: "QwenEdge",
    platforms: [.iOS(.v18), .macOS(.v15)],
    products: products,
    dependencies: [.package(url: "https://github.com/huggingface/swift-transformers", from: "0.1.17")],
    targets: targets
)
